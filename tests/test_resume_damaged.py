"""A resume that finds a journaled task's own output damaged (its EPC cut short, its HDF5 file cut
short: recombine.DamagedOutput) runs that task again in the same run, with the tasks left to run,
and finishes the batch (exit 0) with resqpy's model, merged strictly in task order. It used to
count the task failed (exit 3, "run the same command again"): a user resuming after a node crash
that damaged one file had to resume twice. The rerun's output damaged again is the ordinary
failure (exit 3, OUT untouched); the journal stops calling the task done as soon as the damage is
found, so a resume after an interrupted rerun runs it again."""
from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from resqmp.errors import ExitCode
from resqmp.outputs import h5_of, journal_path, partial_path
from resqmp.recombine import Recombiner
from resqmp.tasks import run_task
from test_premerge import FIND_FACES, batches, reference  # noqa: F401 - batches is a fixture
from test_premerge_epc_damage import damage
from test_recombine import assert_identical, resqpy_recombine
from test_task_output_damage import own_file_records
from wrappers_for_tests import damage_h5

#: one task per Dask task, no group partials: each task's own files are what the resume merges
ARGS = ("--workers", "2", "--set", "tasks.group_size=1", "--set", "tasks.premerge=false", "--keep-task-files")
#: groups of four tasks, each group's outputs gathered into a group partial (resqmp.premerge)
PARTIALS = ("--workers", "2", "--set", "tasks.group_size=4", "--set", "tasks.premerge=true", "--keep-task-files")


def marked_batch(slow, tmp_path: Path, delay: float = 0.5) -> tuple[Path, Path]:
    """The slow fixture's eight find-faces tasks through wrappers_for_tests.marked_find_faces,
    steered by files in the returned markers folder (fail-I, hold-I, damage-I)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    data = yaml.safe_load(Path(slow["batch"]).read_text())
    data["wrapper"] = "wrappers_for_tests:marked_find_faces"
    data["defaults"].update(marker_dir=str(markers), delay=delay)
    path = Path(slow["batch"]).with_name(f"batch-marked-{tmp_path.name}.yaml")   # its paths are relative to there
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, markers


def launch(batch: Path, out: Path, args: tuple = ARGS, timeout: float = 300):
    import subprocess

    from proc_watch import start_launch
    proc = start_launch(batch, out, *args)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # its workers too (its own session)
        proc.communicate()
        raise AssertionError(f"launch still running after {timeout} s") from None
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    return proc.returncode, stderr


def records_of(out: Path) -> list[dict]:
    from test_reliability import journal_records
    return journal_records(out)


def last_records(out: Path) -> dict[int, dict]:
    return {r["index"]: r for r in records_of(out)}        # a later line for an index wins


def report_tasks(out: Path) -> dict[int, dict]:
    report = json.loads(out.with_name(out.stem + ".report.json").read_text())
    return {t["index"]: t for t in report["tasks"]}


def last_calls(markers: Path) -> dict[int, dict]:
    """Each task's output from its last call that returned (marked_find_faces' calls.jsonl): the
    output the run that succeeded merged."""
    lines = (markers / "calls.jsonl").read_text().splitlines()
    return {r["index"]: r for r in map(json.loads, lines)}


def resqpys_model(outputs: dict[int, dict], epc: Path, leave_out: tuple[int, ...] = ()) -> Path:
    """resqpy's recombination of these task outputs, in task order."""
    epc.parent.mkdir()
    resqpy_recombine([outputs[i] for i in sorted(outputs) if i not in leave_out], epc)
    return epc


def damage_output(record: dict, how: str) -> Path:
    """Damage a journaled task's own output; the file damaged."""
    epc = Path(record["epc_file"])
    if how == "h5_truncated":
        damage_h5(h5_of(epc), "truncated")
        return h5_of(epc)
    if how == "h5_gone":
        h5_of(epc).unlink()
        return h5_of(epc)
    if how == "epc_truncated":
        damage(epc, "truncated")
    elif how == "epc_gone":
        epc.unlink()
    else:
        raise ValueError(how)
    return epc


def one_warning_about(stderr: str, index: int) -> str:
    lines = [ln for ln in stderr.splitlines() if "warning" in ln and f"task {index} " in ln]
    assert len(lines) == 1, stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_with_task_7_failed(slow, tmp_path, args: tuple = ARGS):
    """A first run in which task 7 raised: exit 3, tasks 0-6 journaled done, OUT written."""
    batch, markers = marked_batch(slow, tmp_path)
    out = tmp_path / "faults.epc"
    (markers / "fail-7").touch()
    code, stderr = launch(batch, out, args)
    assert code == ExitCode.TASKS_FAILED, stderr
    done = last_records(out)
    assert [i for i in sorted(done) if done[i]["success"]] == list(range(7))
    (markers / "fail-7").unlink()
    return batch, markers, out, done


def test_the_recombiner_holds_a_rerunnable_damaged_result_at_the_front(batches, tmp_path, monkeypatch):
    """Eight results offered `rerunnable`, task 2's HDF5 file cut short: task 2 is handed back to
    run again (take_to_rerun, not take_damaged), and nothing after it is merged before its new
    result is offered: the model is resqpy's of the eight in task order, task 2's from its rerun
    (equivalent CRSs, features and interpretations across tasks: the order decides which ones
    stay)."""
    records = own_file_records(batches, tmp_path, monkeypatch)
    run_dir = tmp_path / "tasks"
    rerun = run_task(FIND_FACES, dict(batches["find_faces"][1][2]), 2, str(run_dir))
    damage_h5(h5_of(Path(records[2]["epc_file"])), "truncated")
    out = tmp_path / "out" / "out.epc"
    out.parent.mkdir()
    recombiner = Recombiner(out)
    for r in records:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], rerunnable=True)
    to_rerun = recombiner.take_to_rerun()
    assert list(to_rerun) == [2] and str(h5_of(Path(records[2]["epc_file"]))) in to_rerun[2]
    assert recombiner.take_damaged() == {} and recombiner.take_to_rerun() == {}
    recombiner.offer(2, rerun["epc_file"], rerun["uuid_list"])
    assert recombiner.take_damaged() == {} and recombiner.take_to_rerun() == {}
    recombiner.publish()
    assert_identical(out, reference(records[:2] + [rerun] + records[3:], tmp_path))


@pytest.mark.parametrize("how", ["h5_truncated", "h5_gone", "epc_truncated", "epc_gone"])
def test_a_resume_reruns_a_journaled_task_whose_output_is_damaged(slow, tmp_path, how):
    """Tasks 0-6 journaled done, task 7 failed; task 2's output then damaged. The same command
    runs tasks 2 and 7 and exits 0 in that one run: the model is resqpy's of the eight outputs
    (task 2's from its rerun) in task order, EPC and .h5; one warning names task 2 and the damaged
    file; task 2's old files are neither read nor removed (--keep-task-files); the journal is gone
    (the output is complete). A journaled file that is not there is not waited for as a worker's
    new file is (recombine.APPEAR_SECONDS, 300 s: a lagging filesystem): an earlier run wrote it,
    so the resume said nothing for five minutes, per such task, before running it again."""
    from epc_compare import content
    batch, markers, out, done = run_with_task_7_failed(slow, tmp_path)
    damaged = damage_output(done[2], how)
    code, stderr = launch(batch, out, timeout=200)
    assert code == 0, stderr
    if how != "epc_gone":          # a task whose EPC is gone is not resumed from at all (journal.py)
        assert str(damaged) in one_warning_about(stderr, 2)
    if how == "h5_gone":
        assert "is not there" in one_warning_about(stderr, 2)
    tasks = report_tasks(out)
    assert all(t["success"] for t in tasks.values())
    assert sorted(i for i, t in tasks.items() if not t["resumed"]) == [2, 7]
    outputs = last_calls(markers)
    assert outputs[2]["epc_file"] != done[2]["epc_file"]
    assert how in ("epc_gone", "h5_gone") or os.path.exists(damaged)
    assert content(out) == slow["reference"]
    assert_identical(out, resqpys_model(outputs, tmp_path / "ref" / "ref.epc"))
    assert not journal_path(out).exists()
    assert not partial_path(out).exists()


def test_a_task_in_a_group_partial_is_rerun_when_its_partial_and_own_output_are_damaged(slow, tmp_path):
    """Group partials: tasks 0-3 journaled with their group's partial, whose HDF5 file is then cut
    short, and task 2's own HDF5 file too. The resume merges tasks 0 and 1 from their own files
    (a partial that cannot be read is only a shortcut lost), runs task 2 again, merges task 3 after
    it, and exits 0 with resqpy's model of the eight outputs. (Task 2's own file damaged under a
    whole partial needs no rerun: its share is merged from the partial.)"""
    from epc_compare import content
    batch, markers, out, done = run_with_task_7_failed(slow, tmp_path, PARTIALS)
    partial = done[2].get("partial")
    assert partial and all(done[i].get("partial") == partial for i in range(4))
    damage_h5(h5_of(Path(partial)), "truncated")
    damaged = damage_output(done[2], "h5_truncated")
    code, stderr = launch(batch, out, PARTIALS)
    assert code == 0, stderr
    assert str(damaged) in one_warning_about(stderr, 2)
    tasks = report_tasks(out)
    assert all(t["success"] for t in tasks.values())
    assert sorted(i for i, t in tasks.items() if not t["resumed"]) == [2, 7]
    assert content(out) == slow["reference"]
    assert_identical(out, resqpys_model(last_calls(markers), tmp_path / "ref" / "ref.epc"))
    assert not journal_path(out).exists()


def test_a_journaled_group_partial_whose_hdf5_file_is_gone_is_not_waited_for(slow, tmp_path):
    """Group partials: tasks 0-3 journaled with their group's partial, whose HDF5 file is then
    removed. The resume merges those four from their own files at once (an earlier run wrote the
    partial: it is not waited for as a worker's new file is, 300 s), says so once, still reads
    this run's own partials, and exits 0 with resqpy's model of the eight outputs."""
    from epc_compare import content
    batch, markers, out, done = run_with_task_7_failed(slow, tmp_path, PARTIALS)
    partial = done[0].get("partial")
    assert partial and all(done[i].get("partial") == partial for i in range(4))
    h5_of(Path(partial)).unlink()
    code, stderr = launch(batch, out, PARTIALS, timeout=200)
    assert code == 0, stderr
    said = [ln for ln in stderr.splitlines() if "of an earlier run is not there" in ln]
    assert len(said) == 1 and Path(partial).name in said[0], stderr
    assert "every group from now on" not in stderr
    tasks = report_tasks(out)
    assert all(t["success"] for t in tasks.values())
    assert sorted(i for i, t in tasks.items() if not t["resumed"]) == [7]
    assert content(out) == slow["reference"]
    assert_identical(out, resqpys_model(last_calls(markers), tmp_path / "ref" / "ref.epc"))


def test_a_damaged_task_after_one_not_yet_run_is_rerun_in_the_same_run(slow, tmp_path):
    """Task 0 held back, the first run killed once three later tasks are journaled; the last of
    them then has its HDF5 file cut short. The resume cannot reach it before task 0 is back from
    the cluster (the merge is in task order): found damaged then, it is sent to the cluster in the
    same run, and the run exits 0 with resqpy's model of the eight outputs."""
    from epc_compare import content
    from proc_watch import new_marker, start_launch, wait_for, wait_until_gone
    batch, markers = marked_batch(slow, tmp_path)
    out = tmp_path / "faults.epc"
    (markers / "hold-0").touch()
    marker = new_marker()
    proc = start_launch(batch, out, *ARGS, marker=marker)
    wait_for(lambda: len([r for r in records_of(out) if r["success"]]) >= 3, what="three tasks journaled")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    (markers / "hold-0").unlink()
    assert wait_until_gone(marker) == []
    done = last_records(out)
    assert 0 not in done
    victim = max(i for i in done if done[i]["success"])
    damaged = damage_output(done[victim], "h5_truncated")
    code, stderr = launch(batch, out)
    assert code == 0, stderr
    assert str(damaged) in one_warning_about(stderr, victim)
    tasks = report_tasks(out)
    assert all(t["success"] for t in tasks.values())
    outputs = last_calls(markers)
    assert not tasks[victim]["resumed"] and outputs[victim]["epc_file"] != done[victim]["epc_file"]
    assert content(out) == slow["reference"]
    assert_identical(out, resqpys_model(outputs, tmp_path / "ref" / "ref.epc"))
    assert not journal_path(out).exists()


def test_a_rerun_damaged_again_fails_as_any_task_and_leaves_out_untouched(slow, tmp_path):
    """Task 2's HDF5 file cut short after the first run, and its rerun cuts its own new one short
    too: the ordinary failure, exit 3, the error naming the rerun's file; OUT (the first run's)
    is not touched, this run's model goes beside it (resqpy's of the seven others), no staging
    folder is left; the journal: done (first run), not done (found damaged, before the rerun),
    the rerun's result, not done (damaged). The next run, the wrapper healthy, finishes (exit 0)."""
    from epc_compare import content
    batch, markers, out, done = run_with_task_7_failed(slow, tmp_path)
    before = (digest(out), digest(h5_of(out)))
    damage_output(done[2], "h5_truncated")
    (markers / "damage-2").touch()
    code, stderr = launch(batch, out)
    assert code == ExitCode.TASKS_FAILED, stderr
    assert (digest(out), digest(h5_of(out))) == before
    tasks = report_tasks(out)
    assert sorted(i for i, t in tasks.items() if not t["success"]) == [2]
    assert not tasks[2]["resumed"] and tasks[2]["error"].startswith("DamagedOutput")
    history = [r for r in records_of(out) if r["index"] == 2]
    assert [r["success"] for r in history] == [True, False, True, False]
    rerun_epc = history[2]["epc_file"]
    assert rerun_epc != done[2]["epc_file"] and str(h5_of(Path(rerun_epc))) in tasks[2]["error"]
    assert rerun_epc == last_calls(markers)[2]["epc_file"]
    assert_identical(partial_path(out), resqpys_model(last_calls(markers), tmp_path / "ref" / "seven.epc",
                                                      leave_out=(2,)))
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    (markers / "damage-2").unlink()
    code, stderr = launch(batch, out)
    assert code == 0, stderr
    assert content(out) == slow["reference"]
    assert [i for i, t in report_tasks(out).items() if not t["resumed"]] == [2]


def test_a_resume_after_an_interrupted_rerun_runs_the_task_again(slow, tmp_path):
    """The resume that found task 2 damaged is killed while task 2 runs again: the journal no
    longer calls task 2 done, so the next run of the same command runs it and exits 0."""
    from epc_compare import content
    from proc_watch import new_marker, start_launch, wait_for, wait_until_gone
    batch, markers, out, done = run_with_task_7_failed(slow, tmp_path)
    damaged = damage_output(done[2], "h5_truncated")
    (markers / "hold-2").touch()
    marker = new_marker()
    proc = start_launch(batch, out, *ARGS, marker=marker)
    wait_for(lambda: [r["success"] for r in records_of(out) if r["index"] == 2] == [True, False],
             what="task 2 journaled not done")
    os.kill(proc.pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=30)
    (markers / "hold-2").unlink()
    assert wait_until_gone(marker) == []
    warning = one_warning_about(stderr, 2)
    assert str(damaged) in warning and "runs again" in warning
    assert last_records(out)[2]["success"] is False
    code, stderr = launch(batch, out)
    assert code == 0, stderr
    tasks = report_tasks(out)
    assert all(t["success"] for t in tasks.values()) and not tasks[2]["resumed"]
    assert content(out) == slow["reference"]
    assert_identical(out, resqpys_model(last_calls(markers), tmp_path / "ref" / "ref.epc"))
