"""The Recombiner against resqpy's own recombination, on the same task outputs.

Reference: the recombination loop of resqpy's function_multiprocessing (sort_uuids_list, then
Model.copy_uuid_from_other_model for each uuid, then store_epc), run on the very task files
resqmp merges, so the two outputs must agree to the byte: every EPC entry (XML of parts,
relationships, content types) after replacing the random uuid of the HDF5 proxy and its creation
time, entry order, and every HDF5 dataset (dtype, shape, layout, values).
"""
from __future__ import annotations

import random
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import resqpy.model as rq
import resqpy.olio.consolidation as cons

from resqmp.batch import load
from resqmp.recombine import Recombiner
from resqmp.tasks import run_task


# -- reference and comparison --------------------------------------------------------------------

def resqpy_recombine(results, out_epc, consolidate=True) -> None:
    """function_multiprocessing's recombination, verbatim in substance (results in task order)."""
    out_epc = Path(out_epc)
    model = rq.Model(str(out_epc), quiet=True) if out_epc.is_file() else rq.new_model(str(out_epc), quiet=True)
    for r in results:
        if r["epc_file"] is None:
            continue
        task_model = rq.Model(epc_file=r["epc_file"], quiet=True)
        uuids = cons.sort_uuids_list(task_model, r["uuid_list"])
        for u in uuids:
            model.copy_uuid_from_other_model(task_model, uuid=u, consolidate=consolidate)
    model.store_epc(quiet=True)
    model.h5_release()


def resqmp_recombine(results, out_epc, consolidate=True, update_existing=False, shuffle=None) -> Recombiner:
    recombiner = Recombiner(out_epc, consolidate=consolidate, update_existing=update_existing)
    order = list(range(len(results)))
    if shuffle is not None:
        random.Random(shuffle).shuffle(order)       # results arrive in any order
    for i in order:
        r = results[i]
        if r["epc_file"] is None:
            recombiner.skip(i)
        else:
            recombiner.offer(i, r["epc_file"], r["uuid_list"])
    recombiner.publish()
    return recombiner


_EXT = "obj_EpcExternalPartReference_"
_CREATION = re.compile(r"(<(?:\w+:)?(?:Creation|created)[^>]*>)[^<]*<")


def fingerprint(epc) -> tuple[list[str], dict[str, str], dict[str, tuple]]:
    """(entry names in order, entry text, HDF5 datasets) with the HDF5 proxy's uuid, h5 file name
    and creation time normalised (they are made afresh for every recombined model)."""
    epc = Path(epc)
    with zipfile.ZipFile(epc) as z:
        names = z.namelist()
        exts = [n[len(_EXT):-4] for n in names if n.startswith(_EXT)]
        def norm(text):
            for i, e in enumerate(exts):
                # a relationship's Id is the uuid, '_'-prefixed when it starts with a digit
                # (resqpy's fesapi quirk): the fresh uuid decides that too, and the form must be
                # the one it decides (a spliced rels part once kept its worker's proxy's form)
                wrong = f'Id="{e}"' if e[0].isdigit() else f'Id="_{e}"'
                assert wrong not in text, f"{epc}: a relationship to the HDF5 proxy {e} has {wrong}"
                text = text.replace(f'Id="_{e}"', f'Id="{e}"').replace(e, f"EXT{i}")
            return text.replace(epc.with_suffix(".h5").name, "OUT.h5")
        entries = {}
        for n in names:
            text = norm(z.read(n).decode())
            if n.startswith(_EXT) or n.startswith("docProps"):
                text = _CREATION.sub(r"\1X<", text)
            entries[norm(n)] = text
    datasets = {}
    with h5py.File(epc.with_suffix(".h5"), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                dcpl = obj.id.get_create_plist()
                datasets[name] = (obj.dtype.str, obj.shape, obj.chunks, obj.compression, dcpl.get_layout(),
                                  dcpl.get_nfilters(), len(obj.attrs), np.asarray(obj[()]).tobytes())
        f.visititems(visit)
    return [norm(n) for n in names], entries, datasets


def assert_identical(ours, theirs) -> None:
    names_a, entries_a, h5_a = fingerprint(ours)
    names_b, entries_b, h5_b = fingerprint(theirs)
    assert names_a == names_b
    for name in names_b:
        assert entries_a[name] == entries_b[name], f"EPC entry {name} differs"
    assert h5_a.keys() == h5_b.keys()
    for key in h5_b:
        assert h5_a[key] == h5_b[key], f"HDF5 dataset {key} differs"


# -- task outputs, made once ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Task outputs of every wrapper, from two example models with different uuids but equivalent
    CRSs, so that consolidation has CRSs, features and interpretations to merge across tasks."""
    from resqmp.example import write_example
    root = tmp_path_factory.mktemp("recombine")
    ex_a = write_example(root / "a", surfaces=3, wells=3, mesh_properties=2)
    ex_b = write_example(root / "b", surfaces=2, wells=1, mesh_properties=1)

    def run(tasks, function, name):
        run_dir = root / f"tasks-{name}"
        run_dir.mkdir()
        results = [run_task(function, dict(kwargs), i, str(run_dir)) for i, kwargs in enumerate(tasks)]
        assert all(r["success"] for r in results), [r["error"] for r in results]
        return results

    ff_a, ff_b = load(ex_a["batch"]), load(ex_b["batch"])
    wells = load(ex_a["batch_wells"])
    mesh_a, mesh_b = load(ex_a["batch_mesh"]), load(ex_b["batch_mesh"])
    return {
        # surfaces repeated (same fault name: same feature and interpretation), and model b's
        # "fault 1"/"fault 2" with its own grid and CRS uuid (equivalent CRS, same fault names)
        "find_faces": run([ff_a.tasks[0], ff_a.tasks[1], ff_a.tasks[0], ff_b.tasks[0], ff_a.tasks[2],
                           ff_b.tasks[1], ff_a.tasks[1]], ff_a.function, "ff"),
        "mesh": run([mesh_a.tasks[0], mesh_b.tasks[0], mesh_a.tasks[1]], mesh_a.function, "mesh"),
        "wells": run([wells.tasks[0], wells.tasks[1], wells.tasks[0], wells.tasks[2]], wells.function, "wells"),
    }


@pytest.mark.parametrize("kind", ["find_faces", "mesh", "wells"])
def test_identical_to_resqpy(outputs, tmp_path, kind):
    results = outputs[kind]
    (tmp_path / "ref").mkdir()
    (tmp_path / "ours").mkdir()
    resqpy_recombine(results, tmp_path / "ref" / "out.epc")
    recombiner = resqmp_recombine(results, tmp_path / "ours" / "out.epc", shuffle=len(kind))
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")
    assert recombiner.seconds > 0
    assert not any(p.name.startswith(".out.staging") for p in (tmp_path / "ours").iterdir())


def test_consolidation_merges_across_tasks(outputs, tmp_path):
    """The find-faces batch really exercises consolidation: one CRS for two example models, one
    feature and one interpretation per fault name, a connection set per task."""
    resqmp_recombine(outputs["find_faces"], tmp_path / "out.epc")
    model = rq.Model(str(tmp_path / "out.epc"), quiet=True)
    titles = lambda t: sorted(model.title(uuid=u) for u in model.uuids(obj_type=t))  # noqa: E731
    assert len(model.uuids(obj_type="LocalDepth3dCrs")) == 1
    assert len(model.uuids(obj_type="IjkGridRepresentation")) == 2
    assert titles("TectonicBoundaryFeature") == ["fault 1", "fault 2", "fault 3"]
    assert titles("FaultInterpretation") == ["fault 1", "fault 2", "fault 3"]
    assert len(model.uuids(obj_type="GridConnectionSetRepresentation")) == len(outputs["find_faces"])
    # every connection set refers to the one resident interpretation of its fault name
    for u in model.uuids(obj_type="GridConnectionSetRepresentation"):
        interp = model.uuid(obj_type="FaultInterpretation", related_uuid=u)
        assert model.title(uuid=interp) == model.title(uuid=u)


def test_update_existing_and_no_consolidation(outputs, tmp_path):
    results = outputs["find_faces"]
    first, second = results[:3], results[3:]
    for name in ("ref", "ours", "ref_nc", "ours_nc"):
        (tmp_path / name).mkdir()
    # adding to an existing recombined model, as function_multiprocessing does when OUT exists
    resqpy_recombine(first, tmp_path / "ref" / "out.epc")
    resqpy_recombine(second, tmp_path / "ref" / "out.epc")
    resqmp_recombine(first, tmp_path / "ours" / "out.epc")
    resqmp_recombine(second, tmp_path / "ours" / "out.epc", update_existing=True, shuffle=1)
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")
    # consolidate=False: nothing merged by equivalence, only by uuid
    resqpy_recombine(results, tmp_path / "ref_nc" / "out.epc", consolidate=False)
    resqmp_recombine(results, tmp_path / "ours_nc" / "out.epc", consolidate=False, shuffle=2)
    assert_identical(tmp_path / "ours_nc" / "out.epc", tmp_path / "ref_nc" / "out.epc")


def test_failed_task_is_skipped(outputs, tmp_path):
    results = [dict(r) for r in outputs["mesh"]]
    results[1] = {**results[1], "epc_file": None, "uuid_list": [], "success": False}
    (tmp_path / "ref").mkdir()
    (tmp_path / "ours").mkdir()
    resqpy_recombine(results, tmp_path / "ref" / "out.epc")
    resqmp_recombine(results, tmp_path / "ours" / "out.epc", shuffle=3)
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")


def test_merge_only_waits_for_the_prefix(outputs, tmp_path):
    """Streaming: a result merges as soon as every earlier task's result is in."""
    results = outputs["mesh"]
    recombiner = Recombiner(tmp_path / "out.epc")
    recombiner.offer(2, results[2]["epc_file"], results[2]["uuid_list"])
    assert recombiner._next == 0 and recombiner.seconds == 0.0
    recombiner.offer(0, results[0]["epc_file"], results[0]["uuid_list"])
    assert recombiner._next == 1 and recombiner.seconds > 0
    recombiner.offer(1, results[1]["epc_file"], results[1]["uuid_list"])
    assert recombiner._next == 3
    recombiner.publish()
    assert (tmp_path / "out.epc").is_file()


# -- consolidation decisions, object by object ---------------------------------------------------

def _populate(model, spec) -> None:
    """Write consolidatable objects from (kind, args) pairs (reuse=False: duplicates allowed)."""
    import resqpy.crs as rqc
    import resqpy.organize as rqo
    import resqpy.property as rqp
    import resqpy.time_series as rqt
    features = {}
    for kind, args in spec:
        if kind == "fault":
            name, em = args
            f = rqo.TectonicBoundaryFeature(model, kind="fault", feature_name=name, extra_metadata=em)
            f.create_xml(reuse=False)
            features[name] = f
        elif kind == "interp":
            name, title, normal = args
            i = rqo.FaultInterpretation(model, tectonic_boundary_feature=features[name], is_normal=normal, title=title)
            i.create_xml(reuse=False)
        elif kind == "horizon":
            name, = args
            g = rqo.GeneticBoundaryFeature(model, kind="horizon", feature_name=name)
            g.create_xml(reuse=False)
            rqo.HorizonInterpretation(model, genetic_boundary_feature=g).create_xml(reuse=False)
        elif kind == "crs":
            x, z_inc_down = args
            rqc.Crs(model, x_offset=x, z_inc_down=z_inc_down).create_xml(reuse=False)
        elif kind == "pk":
            title, parent = args
            rqp.PropertyKind(model, title=title, parent_property_kind=parent).create_xml(reuse=False)
        elif kind == "ts":
            first, count = args
            ts = rqt.TimeSeries(model, first_timestamp=first)
            for _ in range(count - 1):
                ts.extend_by_days(30)
            ts.create_xml(reuse=False)


def test_indexed_consolidation_decides_as_resqpy(tmp_path):
    """Same answers and the same map as resqpy's Consolidation, for residents with duplicates,
    equivalents within tolerance, near misses (extra metadata, flags) and unrelated objects."""
    from resqmp.consolidate import IndexedConsolidation
    resident = rq.new_model(str(tmp_path / "resident.epc"), quiet=True)
    _populate(resident, [
        ("fault", ("F1", {"source": "x"})), ("fault", ("F1", None)), ("fault", ("F2", None)), ("fault", ("F1", None)),
        ("interp", ("F1", "F1", True)), ("interp", ("F2", "F2", False)), ("interp", ("F1", "F1 other", True)),
        ("horizon", ("H1",)), ("horizon", ("H1",)),
        ("crs", (0.0, True)), ("crs", (100.0, True)), ("crs", (100.00001, False)),
        ("pk", ("kind a", "continuous")), ("pk", ("kind a", "discrete")), ("pk", ("kind b", "continuous")),
        ("ts", ("2000-01-01T00:00:00Z", 3)), ("ts", ("2000-01-01T00:00:00Z", 4)),
    ])
    immigrant = rq.new_model(str(tmp_path / "immigrant.epc"), quiet=True)
    _populate(immigrant, [
        ("fault", ("F1", None)), ("fault", ("F1", {"source": "x"})), ("fault", ("F3", None)), ("fault", ("F2", None)),
        ("interp", ("F2", "F2", False)), ("interp", ("F2", "F2", True)),
        ("horizon", ("H1",)), ("horizon", ("H2",)),
        ("crs", (100.00002, True)), ("crs", (100.0, False)), ("crs", (5.0, True)),
        ("pk", ("kind a", "discrete")), ("pk", ("kind c", "continuous")),
        ("ts", ("2000-01-01T00:00:00Z", 4)), ("ts", ("2001-01-01T00:00:00Z", 4)),
    ])
    reference, indexed = cons.Consolidation(resident), IndexedConsolidation(resident)
    parts = cons.sort_parts_list(immigrant, [p for p in immigrant.parts() if "External" not in p])
    decisions = []
    for part in parts:
        expected = reference.equivalent_uuid_for_part(part, immigrant_model=immigrant)
        assert indexed.equivalent_uuid_for_part(part, immigrant_model=immigrant) == expected, part
        decisions.append(expected is not None)
    assert reference.map == indexed.map
    assert any(decisions) and not all(decisions)        # both kinds of answer were exercised
    # each resident built once, compared only with same-key candidates
    assert indexed.constructions <= len(resident.parts())
    assert indexed.comparisons < len(parts) * 3
