"""HDF5 groups copied whole from a group partial (resqmp.h5_copy.copy_groups): a plan names the
groups of the partial's file that hold only its task's arrays, and the launcher copies each in one
call when the partial's file shows it holds exactly those, all plain, and the output lacks it;
otherwise the arrays are copied one by one. Either way the output holds exactly resqpy's datasets.
Real tasks on a real LocalCluster, partials written by the workers as in a launch."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from resqmp.h5_copy import H5Tree, whole_groups
from resqmp.premerge import manifest_of
from test_recombine import assert_identical, fingerprint
from test_splice import client, faults, recombine, reference, run_tasks  # noqa: F401 - fixtures
from test_splice_review import _rewrite_manifests


def _plans(records) -> dict[int, dict]:
    plans = {}
    for partial in sorted({r["partial"] for r in records if r.get("partial")}):
        for index, entry in json.loads(manifest_of(partial).read_text())["tasks"].items():
            if isinstance(entry.get("splice"), dict):
                plans[int(index)] = entry["splice"]
    return plans


def test_each_spliced_share_copies_its_parts_groups_whole_and_the_model_is_resqpys(client, faults, tmp_path):
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    plans = _plans(records)
    # a find-faces task's arrays: its surface's group and its grid connection set's (with a subgroup)
    assert plans and all(len(p["h5_groups"]) == 2 for p in plans.values())
    for plan in plans.values():
        covered = [p for g in plan["h5_groups"] for p in plan["h5"] if p.startswith(g + "/")]
        assert sorted(covered) == sorted(plan["h5"])
    out, recombiner = recombine(records, tmp_path)
    h5 = recombiner.merger.h5
    assert recombiner.merger.spliced == len(records) - 1
    assert h5.groups == 2 * recombiner.merger.spliced
    assert_identical(out, reference(records, tmp_path))


def test_a_group_holding_more_than_the_plan_is_copied_one_dataset_at_a_time(client, faults, tmp_path):
    """The partial's file has an array the plan does not copy in one of its groups (edited here; a
    worker of another version might write one): a copy of the group would bring it into OUT."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    plans = _plans(records)
    index = 5
    group = plans[index]["h5_groups"][1]
    partial = next(r["partial"] for r in records if r["index"] == index)
    with h5py.File(Path(partial).with_suffix(".h5"), "a") as f:
        f.create_dataset(group + "/Stowaway", data=np.arange(3))
        f.create_group(group + "/Empty")
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == len(records) - 1
    assert recombiner.merger.h5.groups == 2 * recombiner.merger.spliced - 1
    names, _, datasets = fingerprint(out)
    assert not any("Stowaway" in k for k in datasets)
    with h5py.File(out.with_suffix(".h5"), "r") as f:
        assert group.strip("/") + "/Empty" not in f
    assert_identical(out, reference(records, tmp_path))


def _name_groups(choose):
    def edit(plan):
        plan["h5_groups"] = choose(plan)
        return plan
    return edit


@pytest.mark.parametrize("choose, whole", [
    (lambda plan: ["/RESQML"], 0),                                     # the output's own, shared by all
    (lambda plan: ["/"], 0),
    (lambda plan: [plan["h5_groups"][0]] * 2, 1),                      # twice: once
    # nested: the first named (the inner one) goes whole, the outer one not (its arrays would go twice)
    (lambda plan: [plan["h5_groups"][1] + "/InterpretationIndices", plan["h5_groups"][1]], 1),
    (lambda plan: ["/RESQML/00000000-0000-0000-0000-000000000000"], 0),   # not in the partial
    (lambda plan: [plan["h5"][0]], 0),                                 # a dataset
], ids=["shared", "root", "twice", "nested", "absent", "dataset"])
def test_groups_a_plan_names_wrongly_are_copied_one_dataset_at_a_time(client, faults, tmp_path, choose, whole):
    """Groups that are not the task's alone are not copied whole (each plan sealed again, as a
    worker of another version might write it): the datasets are, one by one, and OUT is resqpy's."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    _rewrite_manifests(records, _name_groups(choose))
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == len(records) - 1
    assert recombiner.merger.h5.groups == whole * recombiner.merger.spliced
    assert_identical(out, reference(records, tmp_path))


def test_another_groups_arrays_named_as_this_plans_group_are_not_copied(client, faults, tmp_path):
    """A plan naming the group of another task of its partial: that group holds none of this
    plan's arrays, so it is not copied (it would bring the other task's arrays in early)."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    plans = _plans(records)
    other = {i: plans[i + 1 if i % 4 != 3 else i - 1]["h5_groups"] for i in plans}

    def edit(plan):
        index = next(i for i, p in plans.items() if p["crc"] == plan["crc"])
        plan["h5_groups"] = other[index]
        return plan
    _rewrite_manifests(records, edit)
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == len(records) - 1
    assert recombiner.merger.h5.groups == 0
    assert_identical(out, reference(records, tmp_path))


@pytest.mark.parametrize("version", [2, 3])
def test_a_plan_of_an_earlier_version_still_applies(client, faults, tmp_path, version):
    """A worker of an earlier resqmp writes version 2 plans (no "h5_groups") or 3 (its CRC over
    the whole plan as JSON): still applied, and still refused when damaged."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)

    def edit(plan):
        if version == 2:
            del plan["h5_groups"]
        plan["version"] = version
        return plan
    _rewrite_manifests(records, edit)
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == len(records) - 1
    assert recombiner.merger.h5.groups == (0 if version == 2 else 2 * recombiner.merger.spliced)
    ref = reference(records, tmp_path)
    assert_identical(out, ref)

    def damage(plan):
        for entry in plan["new"]:
            entry[2] = entry[2].replace("fault", "faulu", 1)
        return plan
    _rewrite_manifests(records, damage, seal=False)
    out, recombiner = recombine(records, tmp_path, name="damaged")
    assert recombiner.merger.spliced == 0
    assert_identical(out, ref)


def test_a_planned_array_that_is_a_group_in_the_partial_costs_the_partial(client, faults, tmp_path, caplog):
    """A dataset a plan copies replaced by a group of that name: the partial is not read (its
    tasks' own files are merged), never copied into OUT as a group."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    plans = _plans(records)
    victim = plans[6]["h5"][0]
    partial = next(r["partial"] for r in records if r["index"] == 6)
    with h5py.File(Path(partial).with_suffix(".h5"), "a") as f:
        del f[victim]
        f.create_group(victim).create_dataset("inside", data=np.arange(2))
    out, recombiner = recombine(records, tmp_path)
    assert f"lacks the dataset {victim}" in caplog.text
    assert recombiner.merger.spliced == 3
    assert_identical(out, reference(records, tmp_path))


def test_tree_tells_which_groups_hold_only_given_datasets(tmp_path):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        for name in ("R/a/x", "R/a/sub/y", "R/b/x", "R/b/z", "R/c/x"):
            f.create_dataset(name, data=np.arange(2))
        f.create_group("R/c/empty")
        f["R/b/link"] = h5py.SoftLink("/R/a/x")
    with h5py.File(path, "r") as f:
        tree = H5Tree.of_file(f)
    assert tree.holds_only("/R/a", ["/R/a/x", "/R/a/sub/y"])
    assert tree.holds_only("R/a/sub", ["R/a/sub/y"])
    assert not tree.holds_only("/R/a", ["/R/a/x"])                    # not all it holds
    assert not tree.holds_only("/R/b", ["/R/b/x", "/R/b/z"])           # and a link
    assert not tree.holds_only("/R/c", ["/R/c/x"])                     # and an empty group
    assert not tree.holds_only("/R/a", ["/R/a/x", "/R/a/sub"])         # a group is no dataset
    assert not tree.holds_only("/R/a", ["/R/a/x", "/R/a/sub/y", "/R/b/x"])   # one not under it
    assert not tree.holds_only("/", ["/R/a/x"])
    assert not tree.holds_only("/R/a", [])
    plain = {"R/a/x", "R/a/sub/y", "R/c/x"}
    assert whole_groups(["/R/a/x", "/R/a/sub/y", "/R/c/x"], tree, plain) == {"/R/a": ["/R/a/x", "/R/a/sub/y"]}
    # one not plain: copied one by one, and so the group with it
    assert whole_groups(["/R/a/x", "/R/a/sub/y"], tree, {"R/a/x"}) == {}
    assert whole_groups(["/R/a/sub/y"], tree, plain) == {"/R/a/sub": ["/R/a/sub/y"]}


def _soft(f, victim, tmp_path):
    f.move(victim, "/Moved")                       # the array kept, elsewhere in the partial
    f[victim] = h5py.SoftLink("/Moved")


def _external(f, victim, tmp_path):
    with h5py.File(tmp_path / "elsewhere.h5", "w") as g:
        g.create_dataset("array", data=f[victim][()])
    del f[victim]
    f[victim] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/array")


def _dangling(f, victim, tmp_path):
    del f[victim]
    f[victim] = h5py.SoftLink("/nowhere")


def _empty_group(f, victim, tmp_path):
    del f[victim]
    f.create_group(victim)


@pytest.mark.parametrize("damage, whole", [(_soft, True), (_external, True), (_dangling, True), (_empty_group, True),
                                            (_dangling, False), (_empty_group, False)],
                         ids=["soft-link", "external-link", "dangling-link", "empty-group",
                              "dangling-link-one-by-one", "empty-group-one-by-one"])
def test_a_planned_array_that_is_no_dataset_in_the_partial_costs_the_partial(client, faults, tmp_path, caplog, damage,
                                                                              whole):
    """A dataset a plan copies replaced in the partial's file by a link (soft, external, dangling)
    or an empty group: the partial is not read (its tasks' own files are merged). A group copied
    whole brought the link into OUT as it is (a link to a name OUT lacks, or to a file outside
    it), the empty group in place of the array; copied one by one (`whole` False: the plans name
    no group), a dangling link stopped the share half-way, an exception out of the launcher, and
    the empty group went in too. A names-only check of the partial let all through."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    plans = _plans(records)
    victim = plans[6]["h5"][0]
    assert any(victim.startswith(g + "/") for g in plans[6]["h5_groups"])
    if not whole:                                  # as a plan of version 2, or groups not the task's alone
        _rewrite_manifests(records, _name_groups(lambda plan: []))
    partial = next(r["partial"] for r in records if r["index"] == 6)
    with h5py.File(Path(partial).with_suffix(".h5"), "a") as f:
        damage(f, victim, tmp_path)
    out, recombiner = recombine(records, tmp_path)
    with h5py.File(out.with_suffix(".h5"), "r") as f:
        links = []
        f.id.links.visit(lambda name, info: links.append(name) if info.type != h5py.h5l.TYPE_HARD else None,
                         info=True)
    assert links == []
    assert_identical(out, reference(records, tmp_path))
    assert f"lacks the dataset {victim}" in caplog.text
    assert recombiner.merger.spliced == 3


def test_a_name_that_is_no_utf8_in_the_partials_file_is_no_crash(client, faults, tmp_path):
    """The partial's file holds, beside the plans' arrays, a name that is not UTF-8 (h5py then
    gives it as bytes): reading its names raised TypeError out of the launcher. The plans' groups
    are still the tasks' alone: copied whole, and OUT is resqpy's."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    partial = next(r["partial"] for r in records if r["index"] == 6)
    with h5py.File(Path(partial).with_suffix(".h5"), "a") as f:
        h5py.h5g.create(f.id, b"odd-\xff\xfe").close()
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == len(records) - 1
    assert recombiner.merger.h5.groups == 2 * recombiner.merger.spliced
    assert_identical(out, reference(records, tmp_path))


def test_tree_counts_as_datasets_only_datasets_by_their_own_hard_link(tmp_path):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("R/a/x", data=np.arange(2))
        f["R/a/soft"] = h5py.SoftLink("/R/a/x")
        f["R/a/external"] = h5py.ExternalLink("elsewhere.h5", "/x")
        f.create_group("R/a/empty")
        f["R/b/y"] = f["R/a/x"]                       # a second hard link to the same dataset
        h5py.h5g.create(f["R"].id, b"\xff").close()
    with h5py.File(path, "r") as f:
        tree = H5Tree.of_file(f)
    assert tree.is_dataset("/R/a/x")
    for name in ("/R/a/soft", "/R/a/external", "/R/a/empty", "/R/b/y", "/R/a", "/R"):
        assert not tree.is_dataset(name), name
    assert not tree.holds_only("/R/a", ["/R/a/x", "/R/a/soft", "/R/a/external", "/R/a/empty"])
    assert not tree.holds_only("/R/b", ["/R/b/y"])
    assert "R/\udcff" in tree.names and not tree.is_dataset("R/\udcff")


def _break_dataspace(h5: Path, victim: str) -> None:
    """The version of the dataspace message of `victim`'s object header made one HDF5 does not
    know: its name, its link and its object header's prefix stay whole (a visit of the file's names
    and objects sees a dataset), opening or copying it fails."""
    with h5py.File(h5, "r") as f:
        addr = h5py.h5o.get_info(f.id, victim.encode()).addr
    with open(h5, "r+b") as f:
        f.seek(addr)
        prefix = f.read(32)
        # a version 1 object header (h5py's default): 16 bytes, then the first message's header:
        # type 1 (dataspace), its size, flags, 3 reserved; then its body, whose first byte is its version
        assert prefix[0] == 1 and int.from_bytes(prefix[16:18], "little") == 1 and prefix[24] in (1, 2), prefix
        f.seek(addr + 24)
        f.write(bytes([0x7f]))


@pytest.mark.parametrize("whole", [True, False], ids=["group-copy", "one-by-one"])
def test_a_planned_array_that_cannot_be_copied_costs_the_rest_of_the_partial_not_the_run(client, faults, tmp_path,
                                                                                        caplog, whole):
    """A planned dataset's object header damaged where neither its name nor its type shows it (a
    visit of the file sees a dataset; before a8ded64, opening each planned dataset caught this
    one): its copy raised out of the launcher half-way through the share (the share's earlier
    arrays in OUT's .h5, its parts not in the model), on every resume again. The share's arrays
    copied so far are removed from OUT's .h5, the partial is given up, and its remaining tasks are
    merged from their own files."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    if not whole:
        _rewrite_manifests(records, _name_groups(lambda plan: []))
    plans = _plans(records)
    victim = plans[6]["h5"][-1]
    partial = next(r["partial"] for r in records if r["index"] == 6)
    _break_dataspace(Path(partial).with_suffix(".h5"), victim)
    out, recombiner = recombine(records, tmp_path)
    # the warning names the partial and what could not be copied: the array, or the group holding it
    copied = [victim] if not whole else [g for g in plans[6]["h5_groups"] if victim.startswith(g + "/")]
    assert f"group partial {partial}: {copied[0]} of its HDF5 file cannot be copied" in caplog.text
    # what the failed share had copied was taken back: the task's own file found none of it there
    assert "pre-existence" not in caplog.text
    assert recombiner.merger.spliced == 5            # the first group's 3, tasks 4 and 5 of this one
    assert_identical(out, reference(records, tmp_path))
