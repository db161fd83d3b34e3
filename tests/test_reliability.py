"""Fault injection: workers and launchers killed mid-batch, Ctrl-C, timeouts, retries; resume."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from conftest import run_resqmp
from epc_compare import content
from proc_watch import OutputWatcher, new_marker, start_launch, wait_for, wait_until_gone, worker_processes
from resqmp.errors import ExitCode


def journal_records(out: Path) -> list[dict]:
    path = out.with_name(out.stem + ".journal.jsonl")
    if not path.exists():
        return []
    lines = path.read_text().splitlines()[1:]
    return [json.loads(line) for line in lines if line.strip()]


def test_sigkill_one_worker_mid_batch(slow, tmp_path):
    out = tmp_path / "faults.epc"
    marker = new_marker()
    watcher = OutputWatcher(out)
    watcher.start()
    proc = start_launch(slow["batch"], out, "--workers", "2", marker=marker)
    wait_for(lambda: len(journal_records(out)) >= 1, what="a first result")
    workers = worker_processes(proc.pid)
    assert len(workers) == 2
    workers[0].send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    watcher.stop()
    assert proc.returncode == 0, stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["succeeded"] == 8
    assert content(out) == slow["reference"]
    assert not watcher.bad
    assert wait_until_gone(marker) == []


def test_sigkill_launcher_then_same_command_resumes(slow, tmp_path):
    out = tmp_path / "faults.epc"
    marker = new_marker()
    watcher = OutputWatcher(out)
    watcher.start()
    proc = start_launch(slow["batch"], out, marker=marker)
    wait_for(lambda: len(journal_records(out)) >= 3, what="three results")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = {r["index"] for r in journal_records(out) if r["success"]}
    assert 3 <= len(done_before) < 8
    assert not out.exists()                              # nothing half-written at OUT
    # the workers of the killed launcher go away by themselves
    assert wait_until_gone(marker) == []
    proc2 = start_launch(slow["batch"], out)
    stdout, stderr = proc2.communicate(timeout=300)
    watcher.stop()
    assert proc2.returncode == 0, stderr
    assert f"resuming: {len(done_before)} of 8" in stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    resumed = {t["index"] for t in report["tasks"] if t["resumed"]}
    assert resumed == done_before                         # finished tasks were not rerun
    assert report["totals"] == {**report["totals"], "tasks": 8, "succeeded": 8, "resumed": len(done_before)}
    assert content(out) == slow["reference"]
    assert not watcher.bad and watcher.samples > 0
    assert not out.with_name("faults.journal.jsonl").exists()
    assert not list(tmp_path.glob(".faults.staging-*"))


def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(slow, tmp_path):
    out = tmp_path / "faults.epc"
    marker = new_marker()
    proc = start_launch(slow["batch"], out, marker=marker)
    wait_for(lambda: len(journal_records(out)) >= 2, what="two results")
    os.killpg(proc.pid, signal.SIGINT)                    # what a terminal's Ctrl-C does
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert stderr.strip().splitlines()[-1].startswith("resqmp: error: interrupted")
    assert "Traceback" not in stderr
    assert not out.exists()
    assert wait_until_gone(marker) == []     # cluster torn down
    done = {r["index"] for r in journal_records(out) if r["success"]}
    assert len(done) >= 2
    proc2 = start_launch(slow["batch"], out)
    _, stderr2 = proc2.communicate(timeout=300)
    assert proc2.returncode == 0, stderr2
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert {t["index"] for t in report["tasks"] if t["resumed"]} == done
    assert content(out) == slow["reference"]


def test_changed_batch_is_refused_on_resume_and_fresh_starts_over(slow, tmp_path):
    out = tmp_path / "faults.epc"
    batch = slow["folder"] / "batch-changing.yaml"
    data = yaml.safe_load(slow["batch"].read_text())
    batch.write_text(yaml.safe_dump(data))
    proc = start_launch(batch, out)
    wait_for(lambda: len(journal_records(out)) >= 2, what="two results")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    data["tasks"].pop()                                   # the user edits the batch meanwhile
    data["defaults"]["delay"] = 0.0
    batch.write_text(yaml.safe_dump(data))
    refused = run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out)
    assert refused.returncode == ExitCode.BATCH
    assert "the batch changed since this output was started" in refused.stderr and "--fresh" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    fresh = run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, "--fresh", check=0)
    assert "resuming" not in fresh.stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["tasks"] == 7 and report["totals"]["resumed"] == 0
    assert sorted(content(out)["faces"]) == sorted(slow["reference"]["faces"])[:7]


def test_timeout_fails_the_task_restarts_its_worker_and_the_batch_goes_on(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "wrappers_for_tests:sleepy_wrapper",
                                     "tasks": [{"seconds": 600, "name": "stuck"}] +
                                              [{"seconds": 0.1, "name": f"quick {i}"} for i in range(4)]}))
    out = tmp_path / "o.epc"
    # Proven by the path, not a stopwatch: only the timeout gives the stuck task this error (had
    # it run to its end, 600 s later, it would have succeeded, after run_resqmp's own timeout).
    proc = run_resqmp("launch", "--profile", "local", "--set", "tasks.timeout=3", "--batch", batch,
                      "--output", out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    report = json.loads(out.with_name("o.report.json").read_text())
    by_name = {t["name"]: t for t in report["tasks"]}
    assert by_name["stuck"]["error"].startswith("TimeoutError: still running after 3 s")
    assert all(by_name[f"quick {i}"]["success"] for i in range(4))


@pytest.mark.parametrize("retry_on_error, code, attempts", [(True, 0, 2), (False, ExitCode.TASKS_FAILED, 1)])
def test_retry_on_error_is_configurable(tmp_path, retry_on_error, code, attempts):
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "wrappers_for_tests:flaky_wrapper",
                                     "tasks": [{"marker_file": "marker", "name": "flaky"}]}))
    out = tmp_path / "o.epc"
    run_resqmp("launch", "--profile", "local", "--set", f"tasks.retry_on_error={str(retry_on_error).lower()}",
               "--batch", batch, "--output", out, check=code)
    task = json.loads(out.with_name("o.report.json").read_text())["tasks"][0]
    assert task["attempts"] == attempts and task["success"] is retry_on_error


def test_second_launch_on_the_same_output_is_refused_while_the_first_runs(slow, tmp_path):
    out = tmp_path / "faults.epc"
    proc = start_launch(slow["batch"], out)
    try:
        wait_for(lambda: out.with_name("faults.journal.jsonl").exists(), what="the journal")
        second = run_resqmp("launch", "--profile", "local", "--batch", slow["batch"], "--output", out)
        assert second.returncode == ExitCode.OUTPUT
        assert "another resqmp launch is writing it" in second.stderr
    finally:
        proc.communicate(timeout=300)
    assert proc.returncode == 0
