"""The merge's shortcuts give what resqpy's own steps give, on real models.

- resqmp.task_model.load_task_model builds the Model that resqpy.model.Model(epc) builds
  (every attribute, every XML tree, relationship dictionaries, part order), for the EPCs task
  wrappers write, a whole example model, a compressed EPC and one with a damaged member;
- task_model.obj_references finds the nodes rqet.list_obj_references finds (same nodes, same
  order), including nested references, HDF5 proxies and prefix look-alikes;
- consolidate.xml_key equals the key read from the resqpy object, for every feature and
  interpretation, and the consolidation builds no object for an immigrant no resident shares a
  title with, still deciding as resqpy does.

The end-to-end safety net is tests/test_recombine.py (byte identity with resqpy's recombination).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from lxml import etree

import resqpy.model as rq
import resqpy.olio.consolidation as cons
import resqpy.olio.xml_et as rqet

from resqmp.batch import load
from resqmp.consolidate import CONSOLIDATABLE, IndexedConsolidation, _construct, equivalence_key, xml_key
from resqmp.task_model import load_task_model, obj_references
from resqmp.tasks import run_task
from test_recombine import _populate


@pytest.fixture(scope="module")
def epcs(tmp_path_factory, example):
    """EPCs to load: one task output per wrapper, and the example model itself."""
    root = tmp_path_factory.mktemp("fast-paths")
    files = {"model": Path(example["epc"])}
    for key in ("batch", "batch_mesh", "batch_wells"):
        batch = load(example[key])
        run_dir = root / key
        run_dir.mkdir()
        record = run_task(batch.function, dict(batch.tasks[0]), 0, str(run_dir))
        assert record["success"], record["error"]
        files[key] = Path(record["epc_file"])
    return files


def _tree(tree) -> bytes:
    return None if tree is None else etree.tostring(tree, method="c14n")


def model_state(model) -> dict:
    """Everything a Model holds after loading, trees as canonical XML."""
    state = {k: v for k, v in vars(model).items()
             if k not in ("parts_forest", "rels_forest", "other_forest", "main_tree", "main_root")}
    state["parts_forest"] = [(k, t, u, _tree(tree)) for k, (t, u, tree) in model.parts_forest.items()]
    state["rels_forest"] = [(k, u, _tree(tree)) for k, (u, tree) in model.rels_forest.items()]
    state["other_forest"] = [(k, t, _tree(tree)) for k, (t, tree) in model.other_forest.items()]
    state["main_tree"] = _tree(model.main_tree)
    state["object_parts"] = list(model.object_parts)
    return state


def assert_loads_as_resqpy(epc: Path) -> None:
    ours, theirs = model_state(load_task_model(str(epc))), model_state(rq.Model(str(epc), quiet=True))
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == theirs[key], f"{epc.name}: {key} differs"


@pytest.mark.parametrize("which", ["batch", "batch_mesh", "batch_wells", "model"])
def test_task_model_loads_what_resqpy_loads(epcs, which):
    assert_loads_as_resqpy(epcs[which])
    assert len(load_task_model(str(epcs[which])).parts()) > 3


def test_task_model_reads_compressed_and_damaged_epcs(epcs, tmp_path):
    source = epcs["batch"]
    # members resqpy did not write itself: deflated
    deflated = tmp_path / "deflated.epc"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert zipfile.ZipFile(deflated).infolist()[1].compress_type == zipfile.ZIP_DEFLATED
    assert_loads_as_resqpy(deflated)
    # one object part damaged on disk (CRC mismatch): resqpy logs it and drops that part
    damaged = tmp_path / "damaged.epc"
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as z:
        victim = next(i for i in z.infolist() if i.filename.startswith("obj_TriangulatedSet"))
    at = victim.header_offset + 30 + len(victim.filename.encode()) + len(victim.extra) + 200
    data[at] = ord("#") if data[at] != ord("#") else ord("%")
    damaged.write_bytes(bytes(data))
    assert_loads_as_resqpy(damaged)
    assert victim.filename not in load_task_model(str(damaged)).parts_forest


def test_obj_references_as_resqpy(epcs):
    roots = []
    for epc in epcs.values():
        model = rq.Model(str(epc), quiet=True)
        roots += [model.parts_forest[p][2].getroot() for p in model.parts_forest]
    e = "http://www.energistics.org/energyml/data/commonv2"
    xsi = "http://www.w3.org/2001/XMLSchema-instance"
    synthetic = etree.fromstring(f"""
        <a xmlns:eml="{e}" xmlns:xsi="{xsi}">
          <r1 xsi:type="eml:DataObjectReference"><inner xsi:type="eml:DataObjectReference"/></r1>
          <HdfProxy xsi:type="eml:DataObjectReference"><r2 xsi:type="eml:DataObjectReference"/></HdfProxy>
          <b><r3 kind="DataObjectReference"/><r4 kind="{{urn:x}}DataObjectReference"/></b>
          <c><no1 kind="xDataObjectReference"/><no2 kind="DataObjectReferences"/></c>
        </a>""")
    root_itself = etree.fromstring(f'<r xmlns:xsi="{xsi}" xsi:type="DataObjectReference"><r5 x="DataObjectReference"/></r>')
    roots += [synthetic, root_itself, synthetic.find("b"), synthetic.find("HdfProxy")]
    found = 0
    for root in roots:
        expected = rqet.list_obj_references(root)
        assert obj_references(root) == expected
        found += len(expected)
    assert [n.tag for n in obj_references(synthetic)] == ["r1", "r3", "r4"]
    assert found > 20                  # real references were compared, not only empty lists


def test_xml_key_is_the_object_key(epcs, tmp_path):
    models = [rq.Model(str(epc), quiet=True) for epc in epcs.values()]
    populated = rq.new_model(str(tmp_path / "populated.epc"), quiet=True)
    _populate(populated, [("fault", ("F1", {"source": "x"})), ("interp", ("F1", "F1", True)),
                          ("interp", ("F1", "", False)), ("horizon", ("H1",))])
    models.append(populated)
    checked = set()
    for model in models:
        for part in model.parts():
            obj_type = model.type_of_part(part, strip_obj=True)
            if obj_type not in CONSOLIDATABLE:
                continue
            root = model.root_for_part(part)
            key = xml_key(obj_type, root)
            if obj_type.endswith(("Feature", "Interpretation")):
                assert key == equivalence_key(obj_type, _construct(model, obj_type, model.uuid_for_part(part))), part
                checked.add(obj_type)
            else:
                assert key is None            # CRSs etc.: keyed from their objects
    assert {"TectonicBoundaryFeature", "FaultInterpretation", "GeneticBoundaryFeature",
            "HorizonInterpretation"} <= checked


def test_consolidation_builds_objects_only_for_shared_titles(tmp_path):
    resident = rq.new_model(str(tmp_path / "resident.epc"), quiet=True)
    _populate(resident, [("fault", ("F1", None)), ("interp", ("F1", "F1", True)),
                         ("fault", ("F2", None)), ("interp", ("F2", "F2", True))])
    new_names = rq.new_model(str(tmp_path / "new.epc"), quiet=True)
    _populate(new_names, [("fault", ("F3", None)), ("interp", ("F3", "F3", True))])
    same_names = rq.new_model(str(tmp_path / "same.epc"), quiet=True)
    _populate(same_names, [("fault", ("F2", None)), ("interp", ("F2", "F2", True))])

    def decide(immigrant):
        reference, indexed = cons.Consolidation(resident), IndexedConsolidation(resident)
        parts = cons.sort_parts_list(immigrant, [p for p in immigrant.parts() if "External" not in p])
        for part in parts:
            assert (indexed.equivalent_uuid_for_part(part, immigrant_model=immigrant)
                    == reference.equivalent_uuid_for_part(part, immigrant_model=immigrant))
        assert indexed.map == reference.map
        return indexed

    nothing_shared = decide(new_names)
    assert nothing_shared.constructions == 0 and nothing_shared.comparisons == 0 and not nothing_shared.map
    shared = decide(same_names)
    assert shared.constructions >= 1 and shared.comparisons >= 1 and len(shared.map) >= 1


def test_hdf5_groups_and_links_as_resqpy_makes_them(epcs, tmp_path):
    """Beyond test_recombine's datasets: groups and links in the recombined HDF5 file carry the
    properties resqpy's h5py calls give them (link type and character set, creation order)."""
    import h5py
    from test_recombine import resqpy_recombine, resqmp_recombine
    results = []
    for key in ("batch", "batch_wells"):
        epc = epcs[key]
        model = rq.Model(str(epc), quiet=True)
        results.append({"index": len(results), "epc_file": str(epc), "uuid_list": [str(u) for u in model.uuids()]})
    (tmp_path / "ref").mkdir()
    (tmp_path / "ours").mkdir()
    resqpy_recombine(results, tmp_path / "ref" / "out.epc")
    resqmp_recombine(results, tmp_path / "ours" / "out.epc")

    def objects(h5):
        seen = {}
        with h5py.File(h5, "r") as f:
            def visit(name, obj):
                parent, _, leaf = name.rpartition("/")
                group = f[parent] if parent else f["/"]      # kept alive while its links are read
                link = group.id.links.get_info(leaf.encode())
                plist = obj.id.get_create_plist()
                seen[name] = (type(obj).__name__, link.cset, link.type,
                              plist.get_link_creation_order() if isinstance(obj, h5py.Group) else None)
            f.visititems(visit)
        return seen

    theirs = objects(tmp_path / "ref" / "out.h5")
    assert objects(tmp_path / "ours" / "out.h5") == theirs
    assert sum(kind == "Group" for kind, *_ in theirs.values()) > 2
