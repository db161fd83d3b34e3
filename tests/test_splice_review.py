"""Review of the worker's merge plans (resqmp.splice_plan, resqmp.splice): inputs on which a
spliced share differed from resqpy's recombination, and plans the launcher applied although they
could not be applied whole (a traceback instead of the share merged as before). Real tasks on a
real LocalCluster, group partials written by the workers as in a launch.
"""
from __future__ import annotations

import copy
import json
import zipfile

import pytest

import resqpy.model as rq

from resqmp.premerge import manifest_of
from resqmp.recombine import Recombiner
from resqmp.relationships import _id_str
from resqmp.splice_plan import checksum
from test_recombine import assert_identical, resqpy_recombine
from test_splice import client, faults, recombine, reference, run_tasks  # noqa: F401 - fixtures

_EXT = "obj_EpcExternalPartReference_{}.xml"


def _rewrite_manifests(records, edit, seal: bool = True) -> None:
    """edit(plan) on every plan of every partial the records name, the manifest rewritten; each
    plan with its CRC made again (seal: as its worker would have written it) or not (damage)."""
    for partial in sorted({r["partial"] for r in records if r.get("partial")}):
        path = manifest_of(partial)
        manifest = json.loads(path.read_text())
        for entry in manifest["tasks"].values():
            if isinstance(entry.get("splice"), dict):
                entry["splice"] = edit(entry["splice"])
                if seal:
                    entry["splice"]["crc"] = checksum(entry["splice"])
        path.write_text(json.dumps(manifest))


def _with_proxy(plan: dict, new: str) -> dict:
    """The plan as its worker would have written it had its shadow's HDF5 proxy uuid been `new`
    (that uuid is random: any value is one a worker may draw)."""
    old = plan["proxy"]
    text = json.dumps(plan)
    text = text.replace(f'Id=\\"{_id_str(old)}\\"', f'Id=\\"{_id_str(new)}\\"').replace(old, new)
    return json.loads(text)


def test_rels_id_of_the_hdf5_proxy_is_resqpys_whatever_the_shadows_proxy(client, faults, tmp_path):
    """resqpy writes a relationship's Id as the target's uuid, '_'-prefixed when the uuid starts
    with a digit (fesapi's quirk: an xsd:ID cannot start with one). A new part's rels holds its
    relationship to the HDF5 proxy; the plan's rels XML names the shadow's proxy, which the
    launcher replaces by its own: a shadow uuid starting with a letter and the output's with a
    digit (or the reverse) gave Id="3f..." (or Id="_ab..."), not what resqpy writes. OUT here
    exists (its proxy uuid known), so both recombinations share the proxy and every entry must
    be byte for byte resqpy's."""
    earlier = run_tasks(client, faults["distinct"][:3], tmp_path / "earlier", group_size=1)
    existing = tmp_path / "earlier.epc"
    resqpy_recombine(earlier, existing)
    ours = str(rq.Model(str(existing), quiet=True).h5_uuid())
    # a shadow proxy whose first character is of the other kind (digit / letter) than OUT's
    shadow = ("a" if ours[0].isdigit() else "1") + "2345678-aaaa-4bbb-8ccc-0123456789ab"
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    _rewrite_manifests(records, lambda plan: _with_proxy(plan, shadow))
    out, recombiner = recombine(records, tmp_path, existing=existing)
    assert recombiner.merger.spliced >= 3
    ref = reference(records, tmp_path, existing=existing)
    with zipfile.ZipFile(out) as a, zipfile.ZipFile(ref) as b:
        assert a.namelist() == b.namelist()
        differ = {n: _lines_differing(a.read(n), b.read(n)) for n in a.namelist()
                  if not n.startswith("docProps") and a.read(n) != b.read(n)}
    assert differ == {}
    assert_identical(out, ref)


def _lines_differing(ours: bytes, theirs: bytes) -> list[tuple[str, str]]:
    split = lambda xml: xml.decode().replace("><", ">\n<").splitlines()  # noqa: E731
    return [(x, y) for x, y in zip(split(ours), split(theirs)) if x != y]


def _edit_new(field: int, value):
    def edit(plan):
        for entry in plan["new"]:
            if field != 5 or entry[5] is not None:
                entry[field] = value(entry[field])
        return plan
    return edit


@pytest.mark.parametrize("edit", [
    # a key that is no tuple of scalars: filed as a resident's key, it is hashed later
    pytest.param(_edit_new(5, lambda key: [key]), id="nested-key"),
    pytest.param(_edit_new(5, lambda key: {"k": key}), id="dict-key"),
    # an HDF5 path that is no string: not checked with the partial's paths, then copied as str()
    pytest.param(lambda plan: {**plan, "h5": plan["h5"] + [7]}, id="h5-number"),
    pytest.param(lambda plan: {**plan, "h5": plan["h5"] + [None]}, id="h5-null"),
    pytest.param(lambda plan: {**plan, "h5": "/RESQML/x"}, id="h5-string"),
    pytest.param(lambda plan: {**plan, "h5": {p: 1 for p in plan["h5"] + ["/RESQML/x"]}}, id="h5-object"),
])
def test_a_plan_with_values_of_the_wrong_type_is_declined(client, faults, tmp_path, edit):
    """Each value of a plan is the launcher's to check before it changes anything: one of an
    unexpected type declines the plan (the share merged as before), never raises out of the
    launcher, half-applied."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    _rewrite_manifests(records, edit)
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == 0
    assert_identical(out, reference(records, tmp_path))


def test_a_run_without_consolidation_is_resqpys(client, faults, tmp_path):
    """consolidate=False: the plans were made consolidating (as the launcher's merge does by
    default); the launcher does not apply them and the model is resqpy's without consolidation,
    faults recurring by name kept apart."""
    from resqmp.recombine import Recombiner
    records = run_tasks(client, faults["recurring"], tmp_path, group_size=4)
    out = tmp_path / "out" / "out.epc"
    out.parent.mkdir()
    recombiner = Recombiner(out, consolidate=False, task_directory=tmp_path / "tasks")
    for r in records:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r.get("partial"))
    recombiner.publish()
    assert recombiner.merger.spliced == 0
    ref = tmp_path / "ref" / "out.epc"
    ref.parent.mkdir()
    resqpy_recombine(records, ref, consolidate=False)
    assert_identical(out, ref)


def _damage_new(field: int, old: str, new: str):
    def damage(plan):
        for entry in plan["new"]:
            entry[field] = entry[field].replace(old, new, 1)
        return plan
    return damage


@pytest.mark.parametrize("damage", [
    pytest.param(_damage_new(2, "</", "<"), id="xml-not-xml"),
    pytest.param(_damage_new(2, "fault", "faulu"), id="title-byte"),
    pytest.param(_damage_new(3, "sourceObject", "sourceObjecu"), id="rels-type-byte"),
    pytest.param(lambda plan: {**plan, "appends": [[a[0], a[1], a[2][:-1] + "x", *a[3:]] for a in plan["appends"]]},
                 id="append-type-byte"),
])
def test_a_plan_damaged_where_json_still_reads_is_declined(client, faults, tmp_path, damage):
    """The plan's XML and relationships go into OUT as they are, unparsed: a byte of the manifest
    changed where JSON still reads (a disk, a copy; the partial's EPC members have their CRC,
    the manifest had none) published a member no reader can parse, or a part or relationship
    resqpy never wrote, in a run that ended well. The share is merged from the partial instead."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    _rewrite_manifests(records, damage, seal=False)
    out, recombiner = recombine(records, tmp_path)
    assert recombiner.merger.spliced == 0
    assert_identical(out, reference(records, tmp_path))


def test_titles_with_entities_and_carriage_returns_are_resqpys(client, tmp_path):
    """Parts whose XML would not serialise back to the same bytes (an '&', a '<', a CR in a title:
    epc_store.round_trips) are kept as trees, not spilled; features and interpretations with such
    names recur within a group and across groups (consolidated as resqpy does, by keys that went
    through the plan's JSON)."""
    from resqmp.execute import run_on_client
    from resqmp.recombine import Recombiner
    names = ["fault A & B", "fault <C>", "fault\r\nD", "fault A & B", "fault E", "fault\r\nD", "fault <C>",
             "fault A & B", "fault F", "fault G"]
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    found = {}
    run_on_client(client, "wrappers_for_tests:crs_first_surface", dict(enumerate({"name": n} for n in names)),
                  str(run_dir), lambda r: found.__setitem__(r["index"], r), group_size=3, premerge=True)
    records = [found[i] for i in sorted(found)]
    assert all(r["success"] for r in records)
    out = tmp_path / "out" / "out.epc"
    out.parent.mkdir()
    recombiner = Recombiner(out, task_directory=run_dir)
    for r in records:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r.get("partial"))
    recombiner.publish()
    assert recombiner.merger.spliced >= 1
    assert_identical(out, reference(records, tmp_path))


def _leaves(value, path=()):
    """Paths to every value of a plan (of its top-level lists: the first two entries)."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:2] if len(path) == 1 else value):
            yield from _leaves(v, path + (i,))


def _json_type(value) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}[type(value)]


def _in_key(path) -> bool:
    """Is `path` a value of a consolidation key (a query's or a new part's)?"""
    return len(path) == 4 and ((path[0] == "queries" and path[2] == 1) or (path[0] == "new" and path[2] == 5))


def _replaced(plan, path, value):
    plan = copy.deepcopy(plan)
    node = plan
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return plan


def test_any_value_of_another_json_type_anywhere_in_a_plan_declines_it(client, faults, tmp_path):
    """Every value of a real plan (its worker's, sealed with its CRC as a worker would: a worker
    of another version, a bug) replaced by one of each other JSON type: the launcher declines
    the plan, changing nothing, and never raises. A rel type of null was written as 'None', an
    'avoid duplicates' of [] as false, a reference of 0 as a uuid, a key of [] for a
    triangulated set kept as a hint."""
    records = run_tasks(client, faults["distinct"], tmp_path, group_size=4)
    partial = records[5]["partial"]
    plan = json.loads(manifest_of(partial).read_text())["tasks"]["5"]["splice"]
    others = [None, 0, 1.5, True, "x", [], {}, [[]]]
    made = []

    def launcher():
        """A launcher that merged tasks 0-4 (task 5's plan applies to it)."""
        made.append(tmp_path / f"out{len(made)}" / "out.epc")
        made[-1].parent.mkdir()
        launcher = Recombiner(made[-1], task_directory=tmp_path / "tasks")
        for r in records[:5]:
            launcher.offer(r["index"], r["epc_file"], r["uuid_list"], r.get("partial"))
        return launcher

    recombiner = launcher()
    applied, raised = [], []
    tried = 0
    for path in _leaves(plan):
        if path in ((), ("crc",), ("version",)):
            continue
        node = plan
        for p in path:
            node = node[p]
        for value in others:
            if _json_type(value) == _json_type(node):
                continue
            if _in_key(path) and _json_type(value) in ("null", "bool", "number", "string"):
                continue       # a key's values are scalars of any type (a CRS's: strings, booleans, null)
            bad = _replaced(plan, path, value)
            bad["crc"] = checksum(bad)
            share = recombiner.partials.share(partial, 5)
            share.plan = bad
            tried += 1
            try:
                if recombiner.merger.splice_share(share):
                    applied.append((path, value))
                    recombiner.abort()
                    recombiner = launcher()
            except Exception as e:   # noqa: BLE001 - what the test is about
                raised.append((path, value, f"{type(e).__name__}: {e}"))
                recombiner.abort()
                recombiner = launcher()
    recombiner.abort()
    assert tried > 200
    assert (applied, raised) == ([], [])
    # the plan as its worker wrote it applies (the values above were the only change)
    _, again = recombine(records, tmp_path, name="whole")
    assert again.merger.spliced == len(records) - 1
