"""`resqmp batch faces|wells|mesh` on models resqmp did not write: resqpy's own example models and a
faulted corner-point model built with resqpy; what it writes is run with `resqmp launch --profile
local` and the output checked against resqpy's own functions."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_resqmp
from faulted_model import write_faulted_model
from model_faces import output_faces, resqpy_faces
from resqmp.errors import ExitCode
from resqpy_example_data import example_data

ANY_GRID = "resqmp.wrappers:find_faces_to_represent_surface_wrapper"
# parts of resqpy's example models (pinned by git blob id in resqpy_example_data)
BLOCK_GRID = "278f56f0-c8fb-11eb-8aa9-80e650222718"
BLOCK_POINT_SET = "d97ae58c-c90a-11eb-920e-80e650222718"
BLOCK_POINT_SET_INTERP = "d97b5d96-c90a-11eb-920e-80e650222718"
BLOCK_SURFACE = "d98b32a2-c90a-11eb-920e-80e650222718"
S_BEND_GRIDS = ("8be0e944-c927-11eb-b7c1-80e650222718", "8dbd24c6-c927-11eb-b7c1-80e650222718",
                "8fb82514-c927-11eb-b7c1-80e650222718")
S_BEND_WELLS = ["ANGLED_WELL", "HORST_WELL", "VERTICAL_WELL", "NESSIE_WELL"]


@pytest.fixture(scope="session")
def resqpy_models():
    return example_data()


@pytest.fixture(scope="session")
def faulted(tmp_path_factory):
    return write_faulted_model(tmp_path_factory.mktemp("faulted"))


def _copy_model(epc: Path, folder: Path) -> Path:
    """epc and its .h5 into folder (tests write batches beside their own copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (epc, epc.with_suffix(".h5")):
        shutil.copy2(path, folder / path.name)
    return folder / epc.name


def _launch(batch: Path, out: Path, expect=ExitCode.OK) -> dict:
    run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", batch, "--output", out, check=expect)
    return json.loads(out.with_name(out.stem + ".report.json").read_text())


def _one_error(proc, code: int, *fragments: str) -> str:
    """The command failed with code and said so in one `resqmp: error:` line naming fragments."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resqmp: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_faces_on_resqpys_block_model(resqpy_models, tmp_path):
    """block.epc's grid is a faulted corner-point IjkGrid: resqpy's regular wrapper cannot take it."""
    model = _copy_model(resqpy_models / "block.epc", tmp_path / "model")
    batch = tmp_path / "faces.yaml"
    proc = run_resqmp("batch", "faces", "--grid", model, "--surfaces", model, "--type", "all", "-o", batch, check=0)
    assert f"resqmp: batch {batch}: 2 tasks, wrapper {ANY_GRID}" in proc.stdout
    data = yaml.safe_load(batch.read_text())
    assert data == {"wrapper": ANY_GRID,
                    "defaults": {"grid_epc": "model/block.epc", "grid_uuid": BLOCK_GRID, "surface_epc": "model/block.epc"},
                    "tasks": [{"surface_uuid": BLOCK_POINT_SET, "name": "random points defining a surface"},
                              {"surface_uuid": BLOCK_SURFACE, "name": "delaunay triangulated surface"}]}

    out = tmp_path / "out" / "faces.epc"
    out.parent.mkdir()
    report = _launch(batch, out)
    assert [t["success"] for t in report["tasks"]] == [True, True]
    # the numba warm-up covers resqmp's wrapper (its only numba code is resqpy's find-faces code)
    assert report["numba_warm"] is not None and set(report["numba_warm"]["seconds"]) == {"find_faces"}
    assert output_faces(out, "delaunay triangulated surface") == \
        resqpy_faces(model, BLOCK_GRID, model, BLOCK_SURFACE)

    import resqpy.model as rq
    result = rq.Model(str(out), quiet=True)
    assert output_faces(out, "random points defining a surface")          # found, not empty
    # the point set was triangulated; the new surface represents the point set's interpretation
    made = result.uuids(obj_type="TriangulatedSetRepresentation", title="random points defining a surface")
    assert len(made) == 1
    assert str(result.uuid(obj_type="HorizonInterpretation", related_uuid=made[0])) == BLOCK_POINT_SET_INTERP


def test_wells_on_resqpys_s_bend_model(resqpy_models, tmp_path):
    model = _copy_model(resqpy_models / "s_bend.epc", tmp_path)
    batch = tmp_path / "wells.yaml"
    # three grids are titled ROOT: a title that names several grids is refused
    proc = run_resqmp("batch", "wells", "--grid", f"{model}:ROOT", "--trajectories", model, "-o", batch)
    _one_error(proc, ExitCode.BATCH, "'ROOT' matches 3 grids", *S_BEND_GRIDS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_bend.epc", "s_bend.h5"]

    run_resqmp("batch", "wells", "--grid", f"{model}:{S_BEND_GRIDS[1]}", "--trajectories", model, "-o", batch, check=0)
    data = yaml.safe_load(batch.read_text())
    assert data["wrapper"] == "blocked_well_from_trajectory"
    assert data["defaults"] == {"grid_epc": "s_bend.epc", "grid_uuid": S_BEND_GRIDS[1], "trajectory_epc": "s_bend.epc"}
    assert [t["name"] for t in data["tasks"]] == S_BEND_WELLS
    assert all(len(t["trajectory_uuids"]) == 1 for t in data["tasks"])

    out = tmp_path / "wells.epc"
    report = _launch(batch, out)
    assert [t["name"] for t in report["tasks"]] == S_BEND_WELLS and all(t["success"] for t in report["tasks"])

    # each blocked well is the one resqpy blocks from the same grid and trajectory
    import resqpy.grid as grr
    import resqpy.model as rq
    import resqpy.well as rqw
    source = rq.Model(str(model), quiet=True)
    grid = grr.any_grid(source, uuid=S_BEND_GRIDS[1])
    result = rq.Model(str(out), quiet=True)
    blocked = [rqw.BlockedWell(result, uuid=u) for u in result.uuids(obj_type="BlockedWellboreRepresentation")]
    assert len(blocked) == 4
    for task in data["tasks"]:
        trajectory_uuid = task["trajectory_uuids"][0]
        ours = [b for b in blocked if str(b.trajectory.uuid) == trajectory_uuid]
        assert len(ours) == 1, task["name"]
        theirs = rqw.BlockedWell(source, grid=grid, trajectory=rqw.Trajectory(source, uuid=trajectory_uuid))
        assert ours[0].cell_count == theirs.cell_count > 0, task["name"]
        assert (ours[0].cell_indices == theirs.cell_indices).all(), task["name"]


def test_faces_on_a_faulted_corner_point_grid(faulted, tmp_path):
    """Fault surfaces and a horizon point set in their own EPC and CRS, on an irregular grid whose
    faults split its pillars; the grid's EPC holds a second grid, chosen between by title."""
    model = _copy_model(faulted["model"], tmp_path / "model")
    batch = tmp_path / "faces.yaml"
    run_resqmp("batch", "faces", "--grid", f"{model}:faulted grid", "--surfaces", faulted["surfaces_epc"],
               "--type", "all", "--title", "^[FH]", "-o", batch, check=0)
    data = yaml.safe_load(batch.read_text())
    surfaces = faulted["surfaces"]
    assert data == {"wrapper": ANY_GRID,
                    # below the batch file's folder: relative; elsewhere: absolute
                    "defaults": {"grid_epc": "model/faulted.epc", "grid_uuid": faulted["grid_uuid"],
                                 "surface_epc": str(faulted["surfaces_epc"])},
                    "tasks": [{"surface_uuid": surfaces[n], "name": n}
                              for n in ("F1 east", "F2 north", "F3 oblique", "H1 horizon points")]}

    out = tmp_path / "faces.epc"
    report = _launch(batch, out)
    assert all(t["success"] for t in report["tasks"]) and len(report["tasks"]) == 4
    for name in ("F1 east", "F2 north", "F3 oblique"):
        assert output_faces(out, name) == \
            resqpy_faces(model, faulted["grid_uuid"], faulted["surfaces_epc"], surfaces[name]), name
    assert output_faces(out, "H1 horizon points")

    import resqpy.model as rq
    result = rq.Model(str(out), quiet=True)
    # interpretations travel with the surfaces: F1's own, and H1's for the surface made from its points
    assert str(result.uuid(obj_type="FaultInterpretation", related_uuid=surfaces["F1 east"])) == \
        faulted["fault_interpretation"]
    made = result.uuids(obj_type="TriangulatedSetRepresentation", title="H1 horizon points")
    assert len(made) == 1
    assert str(result.uuid(obj_type="HorizonInterpretation", related_uuid=made[0])) == faulted["horizon_interpretation"]


def test_faces_on_an_aligned_regular_grid_use_resqpys_wrapper(faulted, tmp_path):
    batch = tmp_path / "faces.yaml"
    run_resqmp("batch", "faces", "--grid", f"{faulted['model']}:regular grid", "--surfaces", faulted["surfaces_epc"],
               "--title", "^R1", "--set", "n_threads=1", "--set", "feature_type=fault", "-o", batch, check=0)
    data = yaml.safe_load(batch.read_text())
    assert data["wrapper"] == "find_faces_to_represent_surface_regular"
    assert data["defaults"] == {"grid_epc": str(faulted["model"]), "grid_uuid": faulted["regular_uuid"],
                                "surface_epc": str(faulted["surfaces_epc"]), "use_index_as_realisation": False,
                                "n_threads": 1, "feature_type": "fault"}
    assert data["tasks"] == [{"surface_uuid": faulted["surfaces"]["R1 regular fault"], "name": "R1 regular fault"}]
    out = tmp_path / "faces.epc"
    report = _launch(batch, out)
    assert report["tasks"][0]["success"]
    assert output_faces(out, "R1 regular fault")


def test_mesh_from_column_properties(faulted, tmp_path):
    model = _copy_model(faulted["model"], tmp_path)
    batch = tmp_path / "mesh.yaml"
    proc = run_resqmp("batch", "mesh", "--grid", f"{model}:faulted grid", "-o", batch)
    _one_error(proc, ExitCode.BATCH, "IjkGrid (corner-point)", "needs an aligned RegularGrid")
    assert not batch.exists()

    run_resqmp("batch", "mesh", "--grid", f"{model}:regular grid", "--properties", model, "-o", batch, check=0)
    data = yaml.safe_load(batch.read_text())
    props = faulted["column_properties"]
    assert data == {"wrapper": "mesh_from_regular_grid_column_property",
                    "defaults": {"grid_epc": "faulted.epc", "grid_uuid": faulted["regular_uuid"]},
                    "tasks": [{"prop_uuids": [props[n]], "name": n} for n in ("top map", "base map")]}
    out = tmp_path / "mesh.epc"
    report = _launch(batch, out)
    assert [t["name"] for t in report["tasks"]] == ["top map", "base map"] and all(t["success"] for t in report["tasks"])
    import numpy as np
    import resqpy.model as rq
    import resqpy.property as rqp
    import resqpy.surface as rqs
    result, source = rq.Model(str(out), quiet=True), rq.Model(str(model), quiet=True)
    meshes = [rqs.Mesh(result, uuid=u) for u in result.uuids(obj_type="Grid2dRepresentation")]
    # in task order, each mesh's depths are its property's values
    assert len(meshes) == 2
    for mesh, name in zip(meshes, ("top map", "base map")):
        values = rqp.Property(source, uuid=props[name]).array_ref()
        assert np.allclose(mesh.full_array_ref()[..., 2], values), name


def test_wells_title_filter_on_the_faulted_grid(faulted, tmp_path):
    batch = tmp_path / "wells.yaml"
    run_resqmp("batch", "wells", "--grid", f"{faulted['model']}:{faulted['grid_uuid']}",
               "--trajectories", faulted["model"], "--title", "2$", "-o", batch, check=0)
    data = yaml.safe_load(batch.read_text())
    assert data["tasks"] == [{"trajectory_uuids": [faulted["trajectories"]["W2"]], "name": "W2"}]


BAD = {
    # name: (arguments after `resqmp batch`, with {block} {s_bend} {tic} {faulted} {surfaces}; code; fragments)
    "no surfaces": (["faces", "--grid", "{block}", "--surfaces", "{tic}"], ExitCode.BATCH,
                    ["tic_tac_toe.epc", "holds no surfaces"]),
    "no surface of the type": (["faces", "--grid", "{block}", "--surfaces", "{faulted}"], ExitCode.BATCH,
                               ["holds no surfaces of --type triangulated"]),
    "several grids, none named": (["wells", "--grid", "{s_bend}", "--trajectories", "{s_bend}"], ExitCode.BATCH,
                                  ["holds 3 IjkGrids", "name one with --grid EPC:UUID or --grid EPC:TITLE"]),
    "no grid of that title": (["faces", "--grid", "{block}:CORKSCREW", "--surfaces", "{block}"], ExitCode.BATCH,
                              ["no grid titled 'CORKSCREW'", "'ROOT' " + BLOCK_GRID]),
    "uuid of another part": (["faces", "--grid", "{block}:" + BLOCK_SURFACE, "--surfaces", "{block}"], ExitCode.BATCH,
                             ["is a TriangulatedSetRepresentation, not an IjkGrid"]),
    "grid EPC missing": (["faces", "--grid", "{missing}", "--surfaces", "{block}"], ExitCode.BATCH,
                         ["grid EPC", "not found"]),
    "not an EPC": (["faces", "--grid", "{text}", "--surfaces", "{block}"], ExitCode.BATCH,
                   ["not a readable EPC file"]),
    "unknown --set key": (["faces", "--grid", "{block}", "--surfaces", "{block}", "--set", "treshold=3"],
                          ExitCode.BATCH, ["--set treshold: not an argument of wrapper " + ANY_GRID]),
    "misspelt --set key": (["faces", "--grid", "{faulted}:regular grid", "--surfaces", "{surfaces}",
                            "--set", "n_thread=1"], ExitCode.BATCH, ["did you mean n_threads?"]),
    "--set of a per-task key": (["wells", "--grid", "{block}", "--trajectories", "{block}",
                                 "--set", "trajectory_uuids=[]"], ExitCode.BATCH, ["select parts with --title"]),
    "--set of the grid": (["faces", "--grid", "{block}", "--surfaces", "{block}", "--set", "grid_uuid=x"],
                          ExitCode.BATCH, ["given by --grid"]),
    "--set of what resqmp supplies": (["faces", "--grid", "{block}", "--surfaces", "{block}", "--set", "index=1"],
                                      ExitCode.BATCH, ["supplied by resqmp"]),
    "--set without a value": (["faces", "--grid", "{block}", "--surfaces", "{block}", "--set", "name"],
                              ExitCode.BATCH, ["expected KEY=VALUE"]),
    "title matches nothing": (["faces", "--grid", "{block}", "--surfaces", "{block}", "--title", "^fault"],
                              ExitCode.BATCH, ["no surface has a title matching --title '^fault'",
                                               "'delaunay triangulated surface'"]),
    "wells wrapper takes no --set": (["wells", "--grid", "{block}", "--trajectories", "{block}", "--set", "x=1"],
                                     ExitCode.BATCH, ["it takes none beyond those resqmp sets"]),
    "no column property": (["mesh", "--grid", "{faulted}:regular grid", "--properties", "{block}"], ExitCode.BATCH,
                           ["holds no column property of grid 'regular grid'"]),
    "column property not in the grid's EPC": (["mesh", "--grid", "{faulted}:regular grid", "--properties",
                                               "{more_maps}"], ExitCode.BATCH,
                                              ["property 'extra map'", "is not in the grid's EPC",
                                               "reads the properties from the grid's EPC"]),
    "output folder missing": (["faces", "--grid", "{block}", "--surfaces", "{block}", "-o", "{nowhere}"],
                              ExitCode.OUTPUT, ["does not exist"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(case, resqpy_models, faulted, tmp_path):
    args, code, fragments = BAD[case]
    (tmp_path / "notes.epc").write_text("not a zip\n")
    paths = {"block": resqpy_models / "block.epc", "s_bend": resqpy_models / "s_bend.epc",
             "tic": resqpy_models / "tic_tac_toe.epc", "faulted": faulted["model"],
             "surfaces": faulted["surfaces_epc"], "more_maps": faulted["more_maps_epc"], "missing": tmp_path / "missing.epc", "text": tmp_path / "notes.epc",
             "nowhere": tmp_path / "no" / "batch.yaml"}
    args = [a.format(**paths) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "batch.yaml")]
    proc = run_resqmp("batch", *args)
    _one_error(proc, code, *fragments)
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.epc"]      # no batch, no temporary file


def test_bad_title_regex_is_a_usage_error(resqpy_models, tmp_path):
    block = resqpy_models / "block.epc"
    proc = run_resqmp("batch", "faces", "--grid", block, "--surfaces", block, "--title", "(", "-o", tmp_path / "b.yaml")
    assert proc.returncode == ExitCode.USAGE and "is not a regular expression" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_existing_batch_is_replaced_only_with_force(resqpy_models, tmp_path):
    block = _copy_model(resqpy_models / "block.epc", tmp_path)
    batch = tmp_path / "faces.yaml"
    run_resqmp("batch", "faces", "--grid", block, "--surfaces", block, "-o", batch, check=0)
    first = batch.read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert batch.stat().st_mode & 0o777 == 0o666 & ~umask          # an ordinary file, not mkstemp's 0600

    proc = run_resqmp("batch", "faces", "--grid", block, "--surfaces", block, "--type", "all", "-o", batch)
    _one_error(proc, ExitCode.OUTPUT, f"batch file {batch}: exists (use --force to replace it)")
    assert batch.read_text() == first

    run_resqmp("batch", "faces", "--grid", block, "--surfaces", block, "--type", "all", "-o", batch, "--force", check=0)
    assert len(yaml.safe_load(batch.read_text())["tasks"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block.epc", "block.h5", "faces.yaml"]

    # the same model gives the same batch (the header's first line records the command)
    again = tmp_path / "again.yaml"
    run_resqmp("batch", "faces", "--grid", block, "--surfaces", block, "-o", again, check=0)
    assert again.read_text().splitlines()[1:] == first.splitlines()[1:]


def _run_it(proc) -> list[str]:
    """The `run it:` line's command, as a shell reads it, without `resqmp`."""
    import shlex
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run it: "))
    words = shlex.split(line[len("run it: "):])
    assert words[:2] == ["resqmp", "launch"], line
    return words[1:]


def _output_of(words: list[str]) -> Path:
    return Path(words[words.index("--output") + 1])


def _batch_named_like_the_model(tmp_path, block):
    return tmp_path / "block.yaml"            # the suggestion was block.epc: the input model


def _batch_named_like_a_users_file(tmp_path, block):
    (tmp_path / "faces.epc").write_text("the user's own notes")
    return tmp_path / "faces.yaml"            # the suggestion was faces.epc: not resqmp's


def _batch_file_named_epc(tmp_path, block):
    return tmp_path / "faces.epc"             # the suggestion was the batch file itself


@pytest.mark.parametrize("where", [_batch_named_like_the_model, _batch_named_like_a_users_file, _batch_file_named_epc],
                         ids=lambda f: f.__name__.strip("_"))
def test_the_suggested_launch_is_safe_to_run(resqpy_models, tmp_path, where):
    """`resqmp batch` ends with a `run it:` line: run as it is, it must write a new model, never
    refuse (an input, a file resqmp did not write) nor touch a file that is not resqmp's."""
    block = _copy_model(resqpy_models / "block.epc", tmp_path)
    batch = where(tmp_path, block)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    proc = run_resqmp("batch", "faces", "--grid", block, "--surfaces", block, "-o", batch, check=0)
    words = _run_it(proc)
    out = _output_of(words)
    assert out.name not in before and out != batch, proc.stdout
    run_resqmp(*words, "--workers", "1", check=0)
    assert {n: (tmp_path / n).read_bytes() for n in before} == before       # nothing else touched
    # the batch written again: the model an earlier launch wrote is resqmp's, suggested again
    again = run_resqmp("batch", "faces", "--grid", block, "--surfaces", block, "-o", batch, "--force", check=0)
    assert _output_of(_run_it(again)) == out


def test_the_example_suggests_a_safe_launch_too(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "faults.epc").write_text("the user's own model")
    proc = run_resqmp("example", "--out", folder, "--surfaces", "2", check=0)
    words = _run_it(proc)
    assert _output_of(words) != folder / "faults.epc", proc.stdout
    run_resqmp(*words, "--workers", "1", check=0)
    assert (folder / "faults.epc").read_text() == "the user's own model"
