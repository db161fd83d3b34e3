"""Shares merged from their worker's plan (resqmp.splice_plan, resqmp.splice): the launcher checks
every assumption of a plan against its own model and applies it without resqpy objects, or merges
the share as before. Either way the recombined model is resqpy's, to the byte. Real tasks on a
real LocalCluster, group partials written by the workers as in a launch.
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from resqmp.batch import load
from resqmp.execute import run_on_client
from resqmp.premerge import manifest_of
from resqmp.recombine import Recombiner
from test_recombine import assert_identical, resqpy_recombine

FIND_FACES = "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper"


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as c, \
            Client(c, set_as_default=False) as cl:
        yield cl


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """Find-faces tasks on eight distinct faults of one grid (nothing to consolidate between
    tasks; grid, CRS and properties recur by uuid), and on faults that recur by name."""
    from resqmp.example import write_example
    root = tmp_path_factory.mktemp("splice")
    tasks = load(write_example(root / "ex", surfaces=8)["batch"]).tasks
    return {"distinct": tasks, "recurring": [tasks[0], tasks[1], tasks[2], tasks[3], tasks[1], tasks[4], tasks[0],
                                             tasks[5]]}


def run_tasks(client, tasks, folder: Path, group_size: int) -> list[dict]:
    """The tasks run in groups on the cluster, each group's partial written by its worker; the
    records in task order."""
    run_dir = folder / "tasks"
    run_dir.mkdir(parents=True)
    records = {}
    run_on_client(client, FIND_FACES, dict(enumerate(tasks)), str(run_dir), lambda r: records.__setitem__(r["index"], r),
                  group_size=group_size, premerge=True)
    assert all(records[i]["success"] for i in records)
    return [records[i] for i in sorted(records)]


def recombine(records, folder: Path, name="out", existing: Path | None = None) -> tuple[Path, Recombiner]:
    """The launcher's recombination of `records`, from their partials (adding to a copy of
    `existing` if given)."""
    out = folder / name / "out.epc"
    out.parent.mkdir()
    if existing is not None:
        shutil.copy(existing, out)
        shutil.copy(existing.with_suffix(".h5"), out.with_suffix(".h5"))
    recombiner = Recombiner(out, task_directory=folder / "tasks", update_existing=existing is not None)
    for r in records:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r.get("partial"))
    recombiner.publish()
    return out, recombiner


def reference(records, folder: Path, existing: Path | None = None) -> Path:
    ref = folder / "ref" / "out.epc"
    ref.parent.mkdir()
    if existing is not None:
        shutil.copy(existing, ref)
        shutil.copy(existing.with_suffix(".h5"), ref.with_suffix(".h5"))
    resqpy_recombine(records, ref)
    return ref


def declined(recombiner) -> dict:
    splicer = recombiner.merger._splicer
    return dict(splicer.declined) if splicer is not None else {}


def test_distinct_faults_are_spliced_and_the_model_is_resqpys(client, faults, tmp_path):
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    out, recombiner = recombine(records, tmp_path)
    # every share but the run's very first has its plan applied: that one assumed the grid was
    # there already (as for any later group), found it was not, and was merged as before
    assert recombiner.merger.spliced == len(records) - 1
    assert declined(recombiner) == {"a part taken as there is not": 1}
    assert_identical(out, reference(records, tmp_path))


def test_faults_that_recur_across_groups_are_consolidated_as_resqpy_does(client, faults, tmp_path):
    """A worker cannot see what other groups brought: a fault its group meets for the first time
    may be resident already. The launcher finds a resident with the same key and merges that
    share itself; consolidation is resqpy's."""
    records = run_tasks(client, faults["recurring"], tmp_path, group_size=4)
    out, recombiner = recombine(records, tmp_path)
    why = declined(recombiner)
    assert why.get("a resident may be equivalent", 0) + why.get("a part taken as not there is", 0) >= 2
    assert recombiner.merger.spliced >= 3
    assert_identical(out, reference(records, tmp_path))


def test_adding_to_an_existing_model_checks_the_plans_against_it(client, faults, tmp_path):
    """OUT already holds an earlier run's faults 1-3: plans made without seeing it are checked
    against it, and the model is what resqpy's function_multiprocessing makes adding to it."""
    earlier = run_tasks(client, faults["distinct"][:3], tmp_path / "earlier", group_size=1)
    existing = tmp_path / "earlier.epc"
    resqpy_recombine(earlier, existing)
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    out, recombiner = recombine(records, tmp_path, existing=existing)
    assert sum(declined(recombiner).values()) >= 3
    assert_identical(out, reference(records, tmp_path, existing=existing))


def _edit_plans(records, edit) -> None:
    """edit(entry) on every share with a plan, the plan then with its CRC as a worker writes it
    (a plan made for another model, not one damaged)."""
    from resqmp.splice_plan import checksum
    for partial in sorted({r["partial"] for r in records if r.get("partial")}):
        path = manifest_of(partial)
        manifest = json.loads(path.read_text())
        for entry in manifest["tasks"].values():
            if "splice" in entry:
                edit(entry)
                entry["splice"]["crc"] = checksum(entry["splice"])
        path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("edit, why", [
    (lambda e: e["splice"]["present"].append("obj_LocalDepth3dCrs_00000000-0000-0000-0000-000000000001.xml"),
     "a part taken as there is not"),
    (lambda e: e["splice"].__setitem__("new", 5), "a plan value of an unexpected type"),
    (lambda e: e["splice"].__setitem__("version", 0), "not a plan of this version"),
    (lambda e: e["splice"]["appends"].append(["obj_Nothing_00000000-0000-0000-0000-000000000002.xml", "x", "y",
                                              "z", True]), "a relationship to a part not there"),
])
def test_a_plan_that_does_not_hold_changes_nothing(client, faults, tmp_path, edit, why):
    """A plan is checked whole before anything is applied: one that does not hold (here: edited
    in the manifest) is declined, and the share is merged from the partial's model as before."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    _edit_plans(records, edit)
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == 0
    assert declined(recombiner).get(why, 0) >= len(records) - 1
    assert_identical(out, reference(records, tmp_path))


def test_a_partial_lacking_an_array_a_plan_copies_is_not_read(client, faults, tmp_path, caplog):
    """The arrays every plan of a partial copies are checked before any of its shares is merged:
    a partial whose HDF5 file lacks one costs its group the shortcut, never part of a task."""
    import h5py
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    partial = records[4]["partial"]
    plan = json.loads(manifest_of(partial).read_text())["tasks"]["6"]["splice"]
    victim = plan["h5"][-1]
    with h5py.File(Path(partial).with_suffix(".h5"), "a") as f:
        del f[victim]
    out, recombiner = recombine(records, tmp_path)
    assert f"lacks the dataset {victim}" in caplog.text
    assert recombiner.merger.spliced == 3           # the first group's, less the run's first share
    assert_identical(out, reference(records, tmp_path))


def test_planning_writes_nothing_and_removes_nothing(client, faults, tmp_path):
    """The worker's shadow model is named but never a file: resqpy's new_model would delete an
    EPC and an .h5 at its name (a user's file in the worker's folder); planning reads the task
    models and writes nowhere."""
    from resqmp.splice_plan import plan_group
    from resqmp.task_model import load_task_model
    records = run_tasks(client, faults["distinct"][:3], tmp_path / "run", group_size=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.epc").write_bytes(b"the user's model")
    (mine / "model.h5").write_bytes(b"the user's arrays")
    tasks = [(r["index"], load_task_model(r["epc_file"]), r["uuid_list"]) for r in records]
    plans = plan_group(tasks, str(mine / "model.epc"))
    assert sorted(plans) == [0, 1, 2]
    assert sorted(p.name for p in mine.iterdir()) == ["model.epc", "model.h5"]
    assert (mine / "model.epc").read_bytes() == b"the user's model"
    assert (mine / "model.h5").read_bytes() == b"the user's arrays"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sorted(plan_group(tasks, str(empty / "model.epc"))) == [0, 1, 2]
    assert list(empty.iterdir()) == []              # nothing created where nothing was
