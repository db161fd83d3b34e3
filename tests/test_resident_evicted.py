"""Merged parts leave the launcher's memory (issue 11, goal 4), and the model stays resqpy's.

Once a task's merge ends its parts' XML is final: the Recombiner writes it to a spill file in its
staging folder and the parts' trees (and their rels trees) leave the model's forests, standing in
as resqmp.epc_store.SpilledTree until something reads them. Every path that reads a resident
again is exercised here on parts already spilled, each against resqpy's own recombination of
the same task files, to the byte (test_recombine's comparison): consolidation into a spilled
resident, a relationship added to a spilled resident's rels, adding to an existing recombined
EPC, group partial shares, publishing under another name. The memory itself is measured by
bench/launcher_cpu.py; here the mechanism: how many trees the model holds stays bounded.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

import resqpy.model as rq

from resqmp.batch import load
from resqmp.epc_store import SpilledTree
from resqmp.execute import run_group
from resqmp.recombine import SPILL, Recombiner
from test_recombine import assert_identical, outputs, resqpy_recombine  # noqa: F401 - outputs: a fixture

FIND_FACES = "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper"


def trees_held(model) -> tuple[list[str], list[str]]:
    """Part and rels parts whose lxml tree the model holds in memory."""
    parts = [p for p, entry in model.parts_forest.items() if isinstance(entry[2], etree._ElementTree)]
    rels = [r for r, entry in model.rels_forest.items() if isinstance(entry[1], etree._ElementTree)]
    return parts, rels


def point_set_task(folder: Path, index: int) -> dict:
    """bench_wrappers.sleepy_point_set without the sleep: a CRS (equivalent in every task, so it
    consolidates into the first task's) and a 4-point PointSet with its HDF5 array."""
    import resqpy.crs as rqc
    import resqpy.surface as rqs
    folder.mkdir(parents=True)
    epc = str(folder / "wrapper.epc")
    model = rq.new_model(epc, quiet=True)
    crs = rqc.Crs(model, title="bench crs")
    crs.create_xml()
    points = np.array([[0.0, 0.0, 1000.0], [100.0, 0.0, 1000.0], [0.0, 100.0, 1010.0], [100.0, 100.0, 1010.0]])
    points[:, 2] += index
    pset = rqs.PointSet(model, points_array=points, crs_uuid=crs.uuid, title=f"p{index}")
    pset.write_hdf5()
    pset.create_xml()
    model.store_epc(quiet=True)
    model.h5_release()
    return {"index": index, "epc_file": epc, "uuid_list": [str(crs.uuid), str(pset.uuid)], "success": True}


@pytest.fixture(scope="module")
def point_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("point_sets")
    return [point_set_task(root / f"t{i}", i) for i in range(24)]


def test_merged_parts_leave_memory(point_sets, tmp_path):
    """After each task's merge the model holds the trees of a bounded set of parts (the CRS every
    task consolidates into, the HDF5 proxy every array refers to), not two more per task; their
    XML is in the spill file inside the staging folder, which goes with the publish."""
    (tmp_path / "ours").mkdir()
    (tmp_path / "ref").mkdir()
    recombiner = Recombiner(tmp_path / "ours" / "out.epc")
    held = []
    for r in point_sets:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"])
        parts, rels = trees_held(recombiner.model)
        held.append((len(parts), len(rels), len(recombiner.model.main_root)))
    assert len(recombiner.model.parts_forest) == len(point_sets) + 2       # a point set each, one CRS, one proxy
    # each bound on its own (a tuple compared whole is bounded by its first element that differs):
    # CRS and proxy trees, their rels and the model's own _rels/.rels, [Content_Types].xml's Defaults
    # and the Overrides of the model's own parts
    assert all(p <= 2 and r <= 3 and m <= 6 for p, r, m in held), held
    assert held[-1] == held[len(held) // 2]      # no growth with the number of tasks: not even an
    #                                              Override element of [Content_Types].xml per part
    spilled = [p for p, entry in recombiner.model.parts_forest.items() if isinstance(entry[2], SpilledTree)]
    assert len(spilled) == len(point_sets)
    spill = recombiner.staging / SPILL
    assert spill.is_file() and spill.stat().st_size > 0
    # each spilled tree came back at most once: the CRS and the proxy, read by every later task
    assert recombiner.merger.serialised.restored <= 4
    recombiner.publish()
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["out.epc", "out.h5"]   # staging gone
    resqpy_recombine(point_sets, tmp_path / "ref" / "out.epc")
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")


def test_consolidation_and_relationships_reach_spilled_residents(outputs, tmp_path):  # noqa: F811
    """Find-faces tasks repeating fault names and grids: a later task's feature and interpretation
    consolidate into the spilled ones of an earlier task, and its connection set's relationships
    are added to the spilled rels of the grid and of those residents."""
    results = outputs["find_faces"]
    (tmp_path / "ours").mkdir()
    (tmp_path / "ref").mkdir()
    recombiner = Recombiner(tmp_path / "ours" / "out.epc")
    model = recombiner.model
    before = set(model.parts_forest)         # the new model's HDF5 proxy
    recombiner.offer(0, results[0]["epc_file"], results[0]["uuid_list"])
    first = {p: entry[1] for p, entry in model.parts_forest.items() if p not in before}
    assert all(isinstance(model.parts_forest[p][2], SpilledTree) for p in first), trees_held(model)
    grid = next(p for p in first if "IjkGrid" in p)
    grid_rels = f"_rels/{grid}.rels"
    assert isinstance(model.rels_forest[grid_rels][1], SpilledTree)
    relationships_before = len(etree.fromstring(model.rels_forest[grid_rels][1].data()))
    for i in range(1, len(results)):
        recombiner.offer(i, results[i]["epc_file"], results[i]["uuid_list"])
    # later tasks' parts consolidated into task 0's (spilled when they did) ...
    first_uuids = {u.int for u in first.values()}
    assert any(resident in first_uuids for resident in model.consolidation.map.values())
    # ... and relationships were added to the rels of task 0's grid
    assert len(model.rels_forest[grid_rels][1].getroot()) > relationships_before
    recombiner.publish()
    resqpy_recombine(results, tmp_path / "ref" / "out.epc")
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")


@pytest.mark.parametrize("consolidate", [True, False])
def test_update_existing_with_spilled_parts(outputs, tmp_path, consolidate):  # noqa: F811
    """Adding to an existing recombined EPC: its parts are loaded (and stay), the new ones spill
    and later tasks consolidate into and relate to both."""
    results = outputs["find_faces"]
    first, second = results[:3], results[3:]
    (tmp_path / "ours").mkdir()
    (tmp_path / "ref").mkdir()
    resqpy_recombine(first, tmp_path / "ref" / "out.epc", consolidate=consolidate)
    resqpy_recombine(second, tmp_path / "ref" / "out.epc", consolidate=consolidate)
    ours = tmp_path / "ours" / "out.epc"
    recombiner = Recombiner(ours, consolidate=consolidate)
    for i, r in enumerate(first):
        recombiner.offer(i, r["epc_file"], r["uuid_list"])
    recombiner.publish()
    recombiner = Recombiner(ours, consolidate=consolidate, update_existing=True)
    existing = set(recombiner.model.parts_forest)
    for i, r in enumerate(second):
        recombiner.offer(i, r["epc_file"], r["uuid_list"])
        if i == 0:      # the first new task's parts all spilled; later tasks read some back
            new = [p for p in recombiner.model.parts_forest if p not in existing]
            assert new and all(isinstance(recombiner.model.parts_forest[p][2], SpilledTree) for p in new)
    recombiner.publish()
    assert_identical(ours, tmp_path / "ref" / "out.epc")


def test_group_partial_shares_spill(tmp_path):
    """Shares of group partials (their parts' XML given as the partial stored it) spill as task
    files do; the model is resqpy's."""
    from resqmp.example import write_example
    ex_a = write_example(tmp_path / "a", surfaces=2, wells=1, mesh_properties=1)
    ex_b = write_example(tmp_path / "b", surfaces=2, wells=1, mesh_properties=1)
    fa, fb = load(ex_a["batch"]).tasks, load(ex_b["batch"]).tasks
    tasks = [fa[0], fa[1], fb[0], fa[0], fb[1], fa[1], fb[0], fa[0]]
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = run_group(FIND_FACES, list(enumerate(tasks))[:4], str(run_dir), premerge=True) + \
        run_group(FIND_FACES, list(enumerate(tasks))[4:], str(run_dir), premerge=True)
    assert all(r["success"] and r.get("partial") for r in records)
    out = tmp_path / "out" / "out.epc"
    out.parent.mkdir()
    recombiner = Recombiner(out, task_directory=run_dir)
    for r in records:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r["partial"])
    assert recombiner.partials.path is not None          # merged from the partials
    parts, _ = trees_held(recombiner.model)
    assert len(parts) < len(recombiner.model.parts_forest) // 2
    assert len(recombiner.model.main_root) < len(recombiner.model.parts_forest) // 2     # Overrides too
    recombiner.publish()
    ref = tmp_path / "ref" / "out.epc"
    ref.parent.mkdir()
    resqpy_recombine(records, ref)
    assert_identical(out, ref)


def test_publish_under_another_name_after_spilling(point_sets, outputs, tmp_path):  # noqa: F811
    """Published under another name than OUT's (a partial model beside a kept OUT), the EPC names
    its own .h5, from the HDF5 proxy's rels whether spilled or not; as resqpy's recombination
    written at that name."""
    for name, results in (("points", point_sets), ("faces", outputs["find_faces"])):
        (tmp_path / name / "ref").mkdir(parents=True)
        recombiner = Recombiner(tmp_path / name / "out.epc")
        for i, r in enumerate(results):
            recombiner.offer(i, r["epc_file"], r["uuid_list"])
        target = recombiner.publish(tmp_path / name / "partial.epc")
        assert target == tmp_path / name / "partial.epc"
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["partial.epc", "partial.h5", "ref"]
        resqpy_recombine(results, tmp_path / name / "ref" / "partial.epc")
        assert_identical(target, tmp_path / name / "ref" / "partial.epc")
        assert _h5_targets(target) == ["partial.h5"]


def test_abort_removes_the_spill(point_sets, tmp_path):
    recombiner = Recombiner(tmp_path / "out.epc")
    for r in point_sets[:3]:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"])
    assert (recombiner.staging / SPILL).is_file()
    recombiner.abort()
    assert list(tmp_path.iterdir()) == []


def _h5_targets(epc: Path) -> list[str]:
    with zipfile.ZipFile(epc) as z:
        return [rel.get("Target") for name in z.namelist() if name.endswith(".rels")
                for rel in etree.fromstring(z.read(name)) if rel.get("Id") == "Hdf5File"]


@pytest.mark.parametrize("title", ["R&D <crs>", "line one\r\nline two"])
def test_a_part_that_would_not_parse_back_the_same_is_not_spilled(tmp_path, title):
    """Bytes with an entity or a CR may not parse back into the tree they were serialised from
    (resqpy's writer leaves attribute values unescaped, a parser turns CR LF into LF): such a
    part keeps its tree. Here the CRS every later task consolidates into. (A CR in the task's
    file is LF in the tree the task model parsed, so that CRS serialises without one, spills and
    comes back as it was.)"""
    import resqpy.crs as rqc
    results = []
    for i in range(4):
        folder = tmp_path / f"t{i}"
        folder.mkdir()
        model = rq.new_model(str(folder / "task.epc"), quiet=True)
        crs = rqc.Crs(model, title=title)
        crs.create_xml()
        model.store_epc(quiet=True)
        results.append({"index": i, "epc_file": str(folder / "task.epc"), "uuid_list": [str(crs.uuid)]})
    (tmp_path / "ours").mkdir()
    (tmp_path / "ref").mkdir()
    recombiner = Recombiner(tmp_path / "ours" / "out.epc")
    for r in results:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"])
    crs_part = recombiner.model.parts(obj_type="LocalDepth3dCrs")[0]
    if "&" in title:
        assert isinstance(recombiner.model.parts_forest[crs_part][2], etree._ElementTree)
        assert recombiner.merger.serialised.restored == 0
    else:
        assert recombiner.merger.serialised.restored == 1      # the CRS, read by the second task
    recombiner.publish()
    resqpy_recombine(results, tmp_path / "ref" / "out.epc")
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")


def _content_types_after(spill, steps) -> bytes:
    """[Content_Types].xml of a new model after `steps`, its parts serialised by SerialisedParts
    (with a spill file or without: the Override elements then are the model's, as resqpy's)."""
    import io

    import resqpy.model._forestry as m_f
    import resqpy.olio.xml_et as rqet
    from resqpy.olio.xml_namespaces import curly_namespace as ns

    from resqmp.epc_store import SerialisedParts
    model = rq.Model(new_epc=True, create_basics=True, create_hdf5_ext=True, quiet=True)
    serialised = SerialisedParts(model, spill)
    for k, step in enumerate(steps):
        uuid = __import__("uuid").UUID(int=k + 1)
        if step == "resqpy":            # a part copied the slow way: resqpy's _add_part adds its Override
            root = rqet.Element(ns["resqml2"] + "PointSetRepresentation")
            root.set("uuid", str(uuid))
            m_f._add_part(model, "obj_PointSetRepresentation", uuid, root)
        elif step == "spliced":         # a part added from its final XML (resqmp.splice)
            name = f"obj_PointSetRepresentation_{uuid}.xml"
            xml = f'<resqml2:PointSetRepresentation xmlns:resqml2="{ns["resqml2"][1:-1]}" uuid="{uuid}"/>'.encode()
            serialised.add_part(name, "obj_PointSetRepresentation", uuid, xml,
                                b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"/>')
        elif step == "default":         # not an Override: the pending ones go back into the tree before it
            element = rqet.SubElement(model.main_root, ns["content_types"] + "Default")
            element.set("Extension", f"x{k}")
            element.set("ContentType", "application/x-test")
        serialised.serialise_new_parts()
    if spill is None:
        buf = io.BytesIO()
        rqet.write_xml(buf, model.main_tree, standalone="yes")
        return buf.getvalue()
    main = serialised._main_xml()
    serialised.close()
    return main


@pytest.mark.parametrize("steps", [
    ["spliced"] * 5,
    ["resqpy", "spliced", "spliced", "resqpy", "spliced", "resqpy"],
    ["spliced", "resqpy", "default", "spliced", "resqpy", "spliced"],
    ["default", "resqpy", "resqpy"],
], ids=["spliced", "interleaved", "with-a-default", "no-splice"])
def test_content_types_are_resqpys_with_their_overrides_held_as_text(tmp_path, steps):
    """With a spill file the parts' Override entries are held as (name, content type) and written
    as resqpy's writer writes the elements, in the order the parts came, whichever way each came."""
    ours = _content_types_after(tmp_path / "spill", steps)
    theirs = _content_types_after(None, steps)
    assert ours == theirs
    assert ours.count(b"<Override ") >= steps.count("spliced") + steps.count("resqpy")


def test_the_publish_writes_with_the_merge_state_let_go(point_sets, tmp_path):
    """By the publish nothing merges any more: resqpy's relation sets, the consolidation's index
    and map and the HDF5 copier's name sets are let go before the EPC's zip directory (an entry
    per part) is built, which then takes their room rather than adding to the peak. The model
    written is resqpy's all the same."""
    (tmp_path / "ours").mkdir()
    (tmp_path / "ref").mkdir()
    recombiner = Recombiner(tmp_path / "ours" / "out.epc")
    for r in point_sets:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"])
    assert len(recombiner.model.uuid_rels_dict) >= len(point_sets)
    seen = {}
    store = recombiner.merger.serialised.store_epc

    def watched(epc_file=None):
        model = recombiner.model
        seen.update(rels=len(model.uuid_rels_dict), consolidation=model.consolidation,
                    h5_names=len(recombiner.merger.h5._out_paths))
        return store(epc_file)

    recombiner.merger.serialised.store_epc = watched
    recombiner.publish()
    assert seen == {"rels": 0, "consolidation": None, "h5_names": 0}
    resqpy_recombine(point_sets, tmp_path / "ref" / "out.epc")


def _content_types_rewritten(epc: Path, old: bytes, new: bytes) -> None:
    """`epc` with its [Content_Types].xml's `old` replaced by `new` (every other entry as it was)."""
    tmp = epc.with_suffix(".rewriting")
    with zipfile.ZipFile(epc) as zin, zipfile.ZipFile(tmp, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "[Content_Types].xml":
                assert old in data
                data = data.replace(old, new)
            zout.writestr(info, data)
    tmp.replace(epc)


_CT = b"http://schemas.openxmlformats.org/package/2006/content-types"


@pytest.mark.parametrize("types", [
    (b'<Types>', b'</Types>'),                                                    # in no namespace
    (b'<ct:Types xmlns:ct="' + _CT + b'" xmlns="' + _CT + b'">', b'</ct:Types>'),  # prefixed (as usual)
], ids=["no-namespace", "prefixed"])
def test_adding_to_an_existing_model_whose_content_types_root_is_unusual(point_sets, tmp_path, types):
    """An existing OUT whose [Content_Types].xml root resqpy reads but whose Override children its
    writer writes with a namespace declaration of their own (the root not in the content types
    namespace): the parts added are written as resqpy writes them, not as text lines that assume
    the usual root."""
    import shutil
    base = tmp_path / "base" / "out.epc"
    base.parent.mkdir()
    resqpy_recombine(point_sets[:2], base)
    _content_types_rewritten(base, b'<Types xmlns="' + _CT + b'">', types[0])
    _content_types_rewritten(base, b'</Types>', types[1])
    for name in ("ours", "ref"):
        (tmp_path / name).mkdir()
        shutil.copy2(base, tmp_path / name / "out.epc")
        shutil.copy2(base.with_suffix(".h5"), tmp_path / name / "out.h5")
    resqpy_recombine(point_sets[2:6], tmp_path / "ref" / "out.epc")
    recombiner = Recombiner(tmp_path / "ours" / "out.epc", update_existing=True)
    for k, r in enumerate(point_sets[2:6]):
        recombiner.offer(k, r["epc_file"], r["uuid_list"])
    recombiner.publish()
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")
