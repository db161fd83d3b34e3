"""Task starts reach the launcher's stall report without one Dask event per task (issue 11, goal 2).

Each event a worker logs goes through the scheduler to the launcher's client: with the scheduler
in the launcher's process (local and jobqueue backends) that cost ~1.5 ms of launcher CPU per
task. Within a group, starts are now coalesced (the group's first at once, then at most one
message per execute.START_NEWS_INTERVAL with the latest start and the tasks finished since), and
the stall report must still name the task running now, on its worker, for as long as it has run.
"""
from __future__ import annotations

import time

from resqmp.execute import STARTED_TOPIC, START_NEWS_INTERVAL, run_on_client


def _run(tmp_path, seconds: list[float], stall_after: float, group_size: int):
    from distributed import Client, LocalCluster
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    by_index = {i: {"log_dir": str(log_dir), "seconds": s} for i, s in enumerate(seconds)}
    stalls, records = [], []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as c, \
            Client(c, set_as_default=False) as client:
        t0 = time.monotonic()
        run_on_client(client, "wrappers_for_tests:logged_wrapper", by_index, str(tmp_path), records.append,
                      group_size=group_size, stall_after=stall_after, key_prefix="resqmp-news",
                      on_stall=lambda idle, running, waiting, nxt: stalls.append(
                          (time.monotonic() - t0, running, waiting)))
        events = [msg for _, msg in client.get_events(STARTED_TOPIC) if msg.get("run") == "resqmp-news"]
    return records, stalls, events


def test_a_group_of_short_tasks_sends_few_start_messages_and_the_report_names_the_stuck_one(tmp_path):
    """40 tasks of 20 ms then one of 5 s, in one group on one worker: far fewer start messages than
    tasks reach the scheduler, yet the stall report lists task 40 alone, on the group's worker,
    running for about as long as it has (not since the group began), with nothing waiting."""
    seconds = [0.02] * 40 + [5.0]
    records, stalls, events = _run(tmp_path, seconds, stall_after=2, group_size=len(seconds))
    assert [r["index"] for r in records] == list(range(41)) and all(r["success"] for r in records)
    # one at the group's start, then at most one per interval while the short tasks ran (they
    # take ~1 s here, more on a loaded machine: the bound follows their measured time)
    short_wall = sum(r["seconds"] for r in records[:40])
    assert len(events) <= 2 + short_wall / START_NEWS_INTERVAL + 1, (len(events), short_wall)
    assert stalls, "no stall report while task 40 ran for 5 s"
    at, running, waiting = stalls[0]
    assert [r["index"] for r in running] == [40] and waiting == 0, stalls[0]
    assert running[0]["worker"] == records[40]["worker"]
    # it started after the short tasks: its age in the report is that of task 40, not the group's
    # (the group began after t0 and the short tasks ran before it: an ordering, no allowance)
    assert running[0]["seconds"] <= at - short_wall, (running[0], at, short_wall)


def test_every_task_that_finished_early_in_a_group_counts_as_finished(tmp_path):
    """Tasks 0-2 finish within one interval, task 3 hangs for 4 s: the coalesced message says all
    three finished, so the report lists task 3 alone and counts only task 4 as not started."""
    records, stalls, events = _run(tmp_path, [0.01, 0.01, 0.01, 4.0, 0.01], stall_after=1.5, group_size=5)
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert stalls
    _, running, waiting = stalls[0]
    assert [r["index"] for r in running] == [3] and waiting == 1, stalls[0]
    # one for task 0, one coalescing 1-3, one for task 4 (more only if tasks 0-2 took longer than
    # an interval, on a loaded machine: the bound follows their measured time)
    early_wall = sum(r["seconds"] for r in records[:3])
    assert len(events) <= 3 + early_wall / START_NEWS_INTERVAL, (events, early_wall)
