"""A run that stops making progress says so, and timed-out tasks are reported as timeouts without
waits on restarting workers or reruns of finished work (issue 9, "Signals and stalls")."""
from __future__ import annotations

import json
import re
import signal
import threading

import psutil
import yaml

from conftest import run_resqmp
from proc_watch import new_marker, start_launch, wait_for, wait_until_gone, worker_processes
from resqmp.errors import ExitCode
from test_task_groups import calls


def logged_batch(tmp_path, tasks: list[dict]):
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "wrappers_for_tests:logged_wrapper",
                                     "defaults": {"log_dir": str(log_dir)}, "tasks": tasks}))
    return batch, log_dir


def test_hanging_tasks_in_a_row_are_each_one_timeout_run_once(tmp_path):
    """Six tasks that hang, tasks.timeout 1 s, two workers: every task is reported as a timeout
    (not KilledWorker), each ran exactly once (a restart never makes Dask recompute a task whose
    record had already come back), and the launcher never waited for a replacement worker."""
    batch, log_dir = logged_batch(tmp_path, [{"seconds": 1000, "name": f"hang {i}"} for i in range(6)])
    out = tmp_path / "o.epc"
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--set", "tasks.timeout=1",
                      "--set", "tasks.group_size=1", "--batch", batch, "--output", out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    report = json.loads(out.with_name("o.report.json").read_text())
    errors = [t["error"] for t in report["tasks"]]
    assert all(e.startswith("TimeoutError: still running after 1 s") for e in errors), errors
    assert {t["attempts"] for t in report["tasks"]} == {1}
    assert {i: len(pids) for i, pids in calls(log_dir).items()} == {i: 1 for i in range(6)}
    assert "to reconnect after restarting" not in proc.stderr     # distributed's wait for the new worker
    assert "recomputed" not in proc.stderr, proc.stderr            # "...lose already computed task(s)"


class LineReader(threading.Thread):
    """Collects a pipe's lines as they come."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines = stream, []

    def run(self):
        for line in self.stream:
            self.lines.append(line.rstrip("\n"))


STALL = re.compile(r"resqmp: no task has finished for (\d+) s .*; next report after (\d+) s")
RUNNING = re.compile(r"resqmp:   task (\d+) \((.*)\) on (\S+) for (\d+) s")


def stall_reports(lines: list[str]) -> list[dict]:
    """Each stall report: its threshold for the next one and the tasks it lists as running."""
    reports = []
    for line in list(lines):
        m = STALL.match(line)
        if m:
            reports.append({"next": int(m.group(2)), "running": {}})
        m = RUNNING.match(line)
        if m and reports:
            reports[-1]["running"][int(m.group(1))] = (m.group(2), m.group(3), int(m.group(4)))
    return reports


def test_a_stopped_worker_is_reported_with_its_tasks(tmp_path):
    """Both workers SIGSTOPped while running a task, tasks.timeout null: the launcher says which
    tasks run on which worker, once, then again after longer and longer silences; the run
    finishes once the workers continue."""
    batch, log_dir = logged_batch(tmp_path, [{"seconds": 4, "name": "first"}, {"seconds": 4, "name": "second"}])
    out = tmp_path / "o.epc"
    marker = new_marker()
    proc = start_launch(batch, out, "--workers", "2", "--set", "tasks.stall_after=2", marker=marker)
    reader = LineReader(proc.stderr)
    reader.start()
    stopped = []
    try:
        wait_for(lambda: len(calls(log_dir)) == 2, what="both tasks to start")
        workers = {p.pid for p in worker_processes(proc.pid)}
        stopped = [psutil.Process(pids[0]) for pids in calls(log_dir).values()]
        assert {p.pid for p in stopped} <= workers
        for p in stopped:
            p.send_signal(signal.SIGSTOP)
        # a report listing both tasks, and a later one
        wait_for(lambda: any(set(r["running"]) == {0, 1} for r in stall_reports(reader.lines)[:-1]),
                 timeout=120, what="two stall reports, the first listing both tasks")
    finally:
        for p in stopped:
            p.send_signal(signal.SIGCONT)
    proc.wait(timeout=300)
    reader.join(timeout=30)
    assert proc.returncode == 0, "\n".join(reader.lines)
    report = json.loads(out.with_name("o.report.json").read_text())
    where = {t["index"]: t["worker"] for t in report["tasks"]}
    reports = stall_reports(reader.lines)
    listed = next(r for r in reports if set(r["running"]) == {0, 1})
    assert {i: (name, worker) for i, (name, worker, _) in listed["running"].items()} == \
        {0: ("first", where[0]), 1: ("second", where[1])}
    nexts = [r["next"] for r in reports]
    assert nexts[0] == 4 and all(b == 2 * a for a, b in zip(nexts, nexts[1:])), nexts   # 2 s, then 4, 8...
    assert wait_until_gone(marker) == []


def test_a_stall_report_lists_the_task_running_now_within_its_group(tmp_path):
    """Three tasks in one Dask task: while the second runs, the first is done though its record
    comes back only with the group's; the report lists the second alone, on the group's worker."""
    from distributed import Client, LocalCluster

    from resqmp.execute import run_on_client
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    by_index = {i: {"log_dir": str(log_dir), "seconds": s} for i, s in enumerate([0.05, 4, 0.05])}
    stalls, records = [], []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as c, \
            Client(c, set_as_default=False) as client:
        run_on_client(client, "wrappers_for_tests:logged_wrapper", by_index, str(tmp_path), records.append,
                      group_size=3, stall_after=1,
                      on_stall=lambda idle, running, waiting, nxt: stalls.append((running, waiting, nxt)))
    assert [r["index"] for r in records] == [0, 1, 2] and all(r["success"] for r in records)
    assert stalls, "no stall report while task 1 ran for 4 s"
    running, waiting, nxt = stalls[0]
    assert [r["index"] for r in running] == [1] and waiting == 1 and nxt == 2
    assert running[0]["worker"] == records[1]["worker"]
    assert [s[2] for s in stalls] == [2 ** k for k in range(1, len(stalls) + 1)]
