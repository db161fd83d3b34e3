"""resqmp.wrappers.find_faces_to_represent_surface_wrapper, in-process: any IjkGrid, resqpy's faces,
resqpy's return contract, surfaces and interpretations as resqpy's regular wrapper handles them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faulted_model import write_faulted_model
from model_faces import gcs_faces, resqpy_faces
from resqpy_example_data import example_data

BLOCK_GRID = "278f56f0-c8fb-11eb-8aa9-80e650222718"
BLOCK_SURFACE = "d98b32a2-c90a-11eb-920e-80e650222718"


@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    return write_faulted_model(tmp_path_factory.mktemp("faulted"))


def _task_model(result):
    import resqpy.model as rq
    index, success, epc_file, uuid_list = result
    return rq.Model(epc_file, quiet=True)


def _gcs(model, uuid):
    import resqpy.fault as rqf
    return rqf.GridConnectionSet(model, uuid=uuid)


def test_corner_point_grid_where_resqpys_regular_wrapper_fails(tmp_path):
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper
    from resqmp.wrappers import find_faces_to_represent_surface_wrapper
    block = str(example_data() / "block.epc")
    with pytest.raises(AssertionError):           # RegularGrid(uuid=...) of a corner-point grid
        find_faces_to_represent_surface_regular_wrapper(0, str(tmp_path / "resqpy"), False, block, BLOCK_GRID,
                                                        block, BLOCK_SURFACE, "fault")
    result = find_faces_to_represent_surface_wrapper(7, str(tmp_path), block, BLOCK_GRID, block, BLOCK_SURFACE,
                                                     "fault", title="fault faces")
    index, success, epc_file, uuid_list = result
    assert (index, success) == (7, True)
    assert Path(epc_file).name == "wrapper.epc" and Path(epc_file).parent.parent == tmp_path
    model = _task_model(result)
    assert [model.type_of_part(model.part(uuid=u), strip_obj=True) for u in uuid_list] == \
        ["LocalDepth3dCrs", "IjkGridRepresentation", "TriangulatedSetRepresentation", "GridConnectionSetRepresentation"]
    gcs = _gcs(model, uuid_list[-1])
    assert gcs.title == "fault faces" and gcs.list_of_feature_names() == ["fault"]
    assert gcs_faces(gcs) == resqpy_faces(block, BLOCK_GRID, block, BLOCK_SURFACE)


@pytest.mark.parametrize("trimmed", [True, False])
def test_faces_are_resqpys_on_a_faulted_grid(faulted, tmp_path, trimmed):
    """F3 has more than 100 triangles, many outside the grid: trimmed=False trims it first, as
    resqpy's regular wrapper does, and still finds the same faces here."""
    from resqmp.wrappers import find_faces_to_represent_surface_wrapper
    for name in ("F1 east", "F2 north", "F3 oblique"):
        uuid = faulted["surfaces"][name]
        result = find_faces_to_represent_surface_wrapper(0, str(tmp_path), str(faulted["model"]), faulted["grid_uuid"],
                                                         str(faulted["surfaces_epc"]), uuid, name, trimmed=trimmed)
        assert result[1], name
        model = _task_model(result)
        assert gcs_faces(_gcs(model, result[3][-1])) == \
            resqpy_faces(faulted["model"], faulted["grid_uuid"], faulted["surfaces_epc"], uuid), name
        used = model.citation_title_for_part(model.part(uuid=result[3][-2]))
        assert used == (name + " trimmed" if name == "F3 oblique" and not trimmed else name)


def test_a_surface_that_misses_the_grid_is_no_success(faulted, tmp_path):
    from resqmp.wrappers import find_faces_to_represent_surface_wrapper
    result = find_faces_to_represent_surface_wrapper(3, str(tmp_path), str(faulted["model"]), faulted["grid_uuid"],
                                                     str(faulted["surfaces_epc"]), faulted["surfaces"]["X outside"],
                                                     "outside")
    index, success, epc_file, uuid_list = result
    assert (index, success) == (3, False)
    model = _task_model(result)              # stored all the same, without a grid connection set
    assert model.parts(obj_type="GridConnectionSetRepresentation") == []
    assert [model.type_of_part(model.part(uuid=u), strip_obj=True) for u in uuid_list] == \
        ["LocalDepth3dCrs", "IjkGridRepresentation", "TriangulatedSetRepresentation"]


def test_point_sets_and_extended_surfaces_keep_their_interpretation(faulted, tmp_path):
    from resqmp.wrappers import find_faces_to_represent_surface_wrapper
    grid = (str(faulted["model"]), faulted["grid_uuid"])
    surfaces = str(faulted["surfaces_epc"])
    # a point set is triangulated; the new surface represents the point set's horizon interpretation
    result = find_faces_to_represent_surface_wrapper(0, str(tmp_path), *grid, surfaces,
                                                     faulted["surfaces"]["H1 horizon points"], "H1",
                                                     feature_type="horizon")
    assert result[1]
    model = _task_model(result)
    made = result[3][-2]
    assert model.type_of_part(model.part(uuid=made), strip_obj=True) == "TriangulatedSetRepresentation"
    assert str(model.uuid(obj_type="HorizonInterpretation", related_uuid=made)) == faulted["horizon_interpretation"]
    assert model.root_for_uuid(made).find(".//{*}RepresentedInterpretation") is not None
    gcs = _gcs(model, result[3][-1])
    assert model.uuid(obj_type="HorizonInterpretation", related_uuid=gcs.uuid) is not None   # feature_type

    # an extended fault: a flange property, a new surface from the old, the fault interpretation kept,
    # and the grid connection set related to the part asked for
    f1 = faulted["surfaces"]["F1 east"]
    result = find_faces_to_represent_surface_wrapper(0, str(tmp_path), *grid, surfaces, f1, "F1",
                                                     extend_fault_representation=True,
                                                     related_uuid=faulted["fault_interpretation"],
                                                     extra_metadata={"source": "test"})
    assert result[1]
    model = _task_model(result)
    flange, extended, gcs_uuid = result[3][-3:]
    assert model.type_of_part(model.part(uuid=flange), strip_obj=True) == "DiscreteProperty"
    assert model.citation_title_for_part(model.part(uuid=extended)) == "F1 east extended"
    assert str(model.uuid(obj_type="TriangulatedSetRepresentation", related_uuid=extended)) == f1
    assert str(model.uuid(obj_type="FaultInterpretation", related_uuid=extended)) == faulted["fault_interpretation"]
    assert faulted["fault_interpretation"] in {str(u) for u in model.uuids(related_uuid=gcs_uuid)}
    assert _gcs(model, gcs_uuid).extra_metadata == {"source": "test"}


def test_the_find_faces_warm_up_covers_resqmps_wrapper(tmp_path):
    """On an aligned RegularGrid resqmp's wrapper runs resqpy's numba code: after the find-faces
    warm-up, it compiles nothing more (on a corner-point grid it runs numpy-only code)."""
    from resqmp.warm import label_for
    assert label_for("resqmp.wrappers:find_faces_to_represent_surface_wrapper") == "find_faces"
    assert label_for("my_wrappers:find_faces_ijk") is None
    env = {**os.environ, "RESQPY_NUMBA_CACHE": "true", "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "NUMBA_NUM_THREADS": "1"}
    warm = subprocess.run([sys.executable, "-c", "import json; from resqmp.warm import warm_numba_cache; "
                           "print(json.dumps(warm_numba_cache(('find_faces',))))"],
                          env=env, capture_output=True, text=True, timeout=600, check=True)
    assert json.loads(warm.stdout.strip().splitlines()[-1])["errors"] == {}
    run = """
import json, sys
from resqmp.example import write_example
from resqmp.batch import load
from resqmp.warm import _cache_files
from resqmp.wrappers import find_faces_to_represent_surface_wrapper
before = _cache_files(sys.argv[2])
task = load(write_example(sys.argv[1], surfaces=1)["batch"]).tasks[0]
result = find_faces_to_represent_surface_wrapper(0, sys.argv[1], task["grid_epc"], task["grid_uuid"],
                                                 task["surface_epc"], task["surface_uuid"], task["name"])
print(json.dumps({"success": result[1], "before": before, "after": _cache_files(sys.argv[2])}))
"""
    proc = subprocess.run([sys.executable, "-c", run, str(tmp_path / "model"), str(tmp_path / "cache")], env=env,
                          capture_output=True, text=True, timeout=600, check=True)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["success"] and seen["before"] > 0
    assert seen["after"] == seen["before"], seen
