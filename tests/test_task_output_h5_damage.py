"""A task whose own output EPC is whole but whose HDF5 file cannot give every array its parts name
(cut short, gone, not HDF5, a dataset missing) is left out of the model and counted failed, as a
task whose EPC is damaged is (test_task_output_damage): merged not at all, never in part, its
index journaled failed so that the same command runs it again (a resume that finds a journaled
task's output so runs the task again in that run: test_resume_damaged). It used to stop `resqmp launch`
(and the drop-in) with an internal error, exit 1, on every resume again: h5py's OSError ("truncated
file") or the copy's AssertionError ("internal path ... not found") escaped the merge, with part
of the task possibly already copied. An HDF5 file that a lagging filesystem shows after its EPC is
waited for as the EPC is; a task whose parts name no array is merged whatever its HDF5 file."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

import resqmp
import resqmp.recombine as recombine
from resqmp.api import TasksFailed
from resqmp.errors import ExitCode
from resqmp.outputs import h5_of
from test_premerge import batches, reference  # noqa: F401 - batches is a fixture
from test_premerge_h5 import two_groups
from test_recombine import assert_identical
from test_task_output_damage import _recombined
from wrappers_for_tests import damage_h5, h5_damaged_find_faces


def _own_files(batches, run_dir: Path) -> list[dict]:
    """Eight find-faces records, merged from the tasks' own files (no group partial)."""
    run_dir.mkdir()
    records = [r for group in two_groups(batches, run_dir) for r in group]
    for r in records:
        r.pop("partial", None)
    return records


@pytest.mark.parametrize("how", ["truncated", "gone", "not_hdf5", "dataset_missing"])
def test_a_task_whose_h5_is_damaged_is_left_out_whole_and_named(batches, tmp_path, monkeypatch, how):
    """Task 2's HDF5 file damaged: task 2 is named damaged, and the model (EPC and .h5) is resqpy's
    of the other seven tasks: no part, no dataset of task 2's, the tasks after it merged."""
    monkeypatch.setattr(recombine, "APPEAR_SECONDS", 0.5)
    records = _own_files(batches, tmp_path / "tasks")
    ref = reference([r for r in records if r["index"] != 2], tmp_path)
    victim = h5_of(Path(records[2]["epc_file"]))
    damage_h5(victim, how)
    out, damaged = _recombined(records, tmp_path)
    assert list(damaged) == [2] and str(victim) in damaged[2]
    assert_identical(out, ref)


def test_an_h5_shown_late_is_waited_for_and_merged(batches, tmp_path, monkeypatch):
    """A shared filesystem that shows a task's EPC two seconds before its HDF5 file: the launcher
    waits for it (APPEAR_SECONDS), as for the EPC, and merges the task."""
    monkeypatch.setattr(recombine, "APPEAR_SECONDS", 120.0)
    records = _own_files(batches, tmp_path / "tasks")
    ref = reference(records, tmp_path)
    h5 = h5_of(Path(records[2]["epc_file"]))
    hidden = tmp_path / "hidden.h5"
    os.rename(h5, hidden)
    shown = threading.Timer(2.0, os.rename, (hidden, h5))
    shown.start()
    try:
        out, damaged = _recombined(records, tmp_path)
    finally:
        shown.cancel()
        shown.join()
    assert damaged == {}
    assert_identical(out, ref)


def _no_array_task(folder: Path) -> dict:
    """A task output whose parts name no HDF5 array (a CRS, a fault feature and interpretation),
    written by resqpy, which still writes an (empty) HDF5 file and names it."""
    import resqpy.crs as rqc
    import resqpy.model as rq
    import resqpy.organize as rqo
    folder.mkdir()
    epc = folder / "task.epc"
    model = rq.new_model(str(epc), quiet=True)
    crs = rqc.Crs(model)
    crs.create_xml()
    feature = rqo.TectonicBoundaryFeature(model, kind="fault", feature_name="no arrays")
    feature.create_xml()
    interp = rqo.FaultInterpretation(model, tectonic_boundary_feature=feature)
    interp.create_xml()
    model.store_epc(quiet=True)
    model.h5_release()
    return {"epc_file": str(epc), "uuid_list": [str(crs.uuid), str(feature.uuid), str(interp.uuid)]}


@pytest.mark.parametrize("how", ["gone", "not_hdf5"])
def test_a_task_whose_parts_name_no_array_is_merged_whatever_its_h5(batches, tmp_path, monkeypatch, how):
    """Nothing is read from that task's HDF5 file, so nothing about it is checked or waited for:
    the model is resqpy's (computed while the file was whole)."""
    monkeypatch.setattr(recombine, "APPEAR_SECONDS", 0.5)
    records = _own_files(batches, tmp_path / "tasks")[:4]
    records.insert(2, _no_array_task(tmp_path / "no_arrays"))
    for i, r in enumerate(records):
        r["index"] = i
    ref = reference(records, tmp_path)
    damage_h5(h5_of(Path(records[2]["epc_file"])), how)
    out, damaged = _recombined(records, tmp_path)
    assert damaged == {}
    assert_identical(out, ref)


def _last_records(out: Path) -> dict[int, dict]:
    from test_reliability import journal_records
    return {r["index"]: r for r in journal_records(out)}       # a later line for an index wins


@pytest.mark.parametrize("how", ["truncated", "dataset_missing"])
def test_launch_resumed_with_a_task_h5_damaged_runs_it_again_in_that_run(slow, tmp_path, how):
    """`resqmp launch`, SIGKILLed once tasks are journaled; one journaled task's HDF5 file is then
    cut short (or loses a dataset). The same command runs that task again with the others left to
    run, in that one run (test_resume_damaged), one warning naming the file, and gives resqpy's
    model (exit 0), its journal gone. It used to count the task failed (exit 3), journaled so, and
    leave it to a third run."""
    from epc_compare import content
    from proc_watch import launch_killed_once_journaled, start_launch
    out = tmp_path / "faults.epc"
    args = ("--workers", "2", "--set", "tasks.group_size=1", "--set", "tasks.premerge=false")
    records = launch_killed_once_journaled(slow["batch"], out, *args, records=2, what="two tasks' results")
    victim = next(r for r in records if r["success"])
    victim_h5 = h5_of(Path(victim["epc_file"]))
    damage_h5(victim_h5, how)
    proc2 = start_launch(slow["batch"], out, *args)
    stdout, stderr = proc2.communicate(timeout=300)
    assert proc2.returncode == 0, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    (warning,) = [ln for ln in stderr.splitlines() if "warning" in ln and f"task {victim['index']} " in ln]
    assert str(victim_h5) in warning and "runs again in this run" in warning
    assert content(out) == slow["reference"]
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["succeeded"] == 8
    (rerun,) = [t for t in report["tasks"] if t["index"] == victim["index"]]
    assert not rerun["resumed"]
    assert not _last_records(out)           # complete: the journal is gone


def _faces_kwargs(example, damage_index: int, how: str = "truncated") -> list[dict]:
    from resqmp.batch import load
    return [{**k, "damage_index": damage_index, "how": how} for k in load(example["batch"]).tasks]


@pytest.mark.parametrize("on_cluster", [False, True], ids=["in-process", "local-cluster"])
def test_the_drop_in_returns_false_for_a_task_whose_h5_is_damaged(example, tmp_path, cluster, on_cluster):
    """function_multiprocessing: task 1's HDF5 file cut short after it ran: its success is False
    (its error says DamagedOutput), the others True, and the model is resqpy's of the others."""
    import resqpy.multi_processing as rqmp
    from epc_compare import content
    kwargs_list = _faces_kwargs(example, damage_index=1)
    success = resqmp.function_multiprocessing(h5_damaged_find_faces, kwargs_list, tmp_path / "ours.epc",
                                              cluster=cluster if on_cluster else None, tmp_dir_path=tmp_path)
    assert success == [True, False] + [True] * (len(kwargs_list) - 2)
    assert "DamagedOutput" in str(success.errors[1])
    others = [k for i, k in enumerate(_faces_kwargs(example, damage_index=-1)) if i != 1]
    assert all(rqmp.function_multiprocessing(h5_damaged_find_faces, others, str(tmp_path / "theirs.epc"), None,
                                             tmp_dir_path=str(tmp_path)))
    assert content(tmp_path / "ours.epc") == content(tmp_path / "theirs.epc")


def test_the_drop_in_with_require_success_raises_and_writes_nothing(example, tmp_path, cluster):
    kwargs_list = _faces_kwargs(example, damage_index=2, how="dataset_missing")
    with pytest.raises(TasksFailed, match=r"\(tasks 2\)") as info:
        resqmp.function_multiprocessing(h5_damaged_find_faces, kwargs_list, tmp_path / "o.epc", cluster=cluster,
                                        require_success=True, tmp_dir_path=tmp_path)
    assert "DamagedOutput" in str(info.value.errors[2])
    assert not (tmp_path / "o.epc").exists() and not (tmp_path / "o.h5").exists()
