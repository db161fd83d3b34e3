"""Review of the coalesced task-start news (execute._StartNews, _Running): what the stall report
says after a group is sent again, with real LocalClusters."""
from __future__ import annotations

from resqmp.execute import run_on_client


def _run(tmp_path, calls: dict[int, list[float]], stall_after: float, group_size: int, **cluster):
    from distributed import Client, LocalCluster
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    by_index = {i: {"log_dir": str(log_dir), "calls": c} for i, c in calls.items()}
    stalls, records = [], []
    options = {"n_workers": 1, "threads_per_worker": 1, **cluster}
    with LocalCluster(processes=True, dashboard_address="127.0.0.1:0", **options) as c, \
            Client(c, set_as_default=False) as client:
        run_on_client(client, "wrappers_for_tests:scripted_wrapper", by_index, str(tmp_path), records.append,
                      group_size=group_size, stall_after=stall_after, key_prefix="resqmp-review",
                      on_stall=lambda idle, running, waiting, nxt: stalls.append((running, waiting)))
    return records, stalls


def test_tasks_finished_on_a_worker_that_died_count_as_waiting_again(tmp_path):
    """Group 0-3 on one worker: tasks 0 and 1 finish (the start of 2 tells so), task 2 kills the
    worker. Dask sends the group again to the fresh worker, where task 0 now hangs. Tasks 1-3 have
    to run again there: the report lists task 0 and counts 3 waiting, not 1 or 2 (the records of 0
    and 1 died with the first worker, so their 'finished' news is void); while no worker runs the
    group, all 4 wait."""
    calls = {0: [0.6, 10.0], 1: [0.6, 0.01], 2: [-0.5, 0.01], 3: [0.01]}
    records, stalls = _run(tmp_path, calls, stall_after=2, group_size=4)
    assert [r["index"] for r in records] == [0, 1, 2, 3] and all(r["success"] for r in records)
    again = [(running, waiting) for running, waiting in stalls if [r["index"] for r in running] == [0]]
    assert again, f"no report while task 0 hung on the second worker: {stalls}"
    assert all(waiting == 3 for _, waiting in again), stalls
    # between the death and the first news from the fresh worker nothing runs and nothing is done
    assert all(waiting == 4 for running, waiting in stalls if not running), stalls


class _LauncherOf891cd9c:
    """The stall report's event handler of resqmp up to 891cd9c (one event per start, `done` the
    task before it or None), verbatim but for its name: a launcher of that version meets workers of
    this one on a cluster it did not start (the external backend warns, and goes on)."""

    def __init__(self, run: str):
        import threading
        self.run = run
        self._lock = threading.Lock()
        self._since: dict[int, tuple[str, float]] = {}
        self._done: set[int] = set()

    def started(self, event) -> None:
        import time
        msg = event[1]
        if isinstance(msg, dict) and msg.get("run") == self.run:
            with self._lock:
                self._since[int(msg["index"])] = (str(msg.get("worker")), time.monotonic())
                self._done.discard(int(msg["index"]))
                if msg.get("done") is not None:
                    self._since.pop(int(msg["done"]), None)
                    self._done.add(int(msg["done"]))


def test_a_launcher_of_the_version_before_reads_the_coalesced_news(tmp_path):
    """The start messages this worker sends, as they reach a client (msgpack and all), fed to the
    previous version's handler: none makes it raise (distributed would log an error per message),
    and after the last one it holds the hung task 20 alone as running, not a task long finished."""
    from distributed import Client, LocalCluster

    from resqmp.execute import STARTED_TOPIC
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    by_index = {i: {"log_dir": str(log_dir), "calls": [0.05 if i < 20 else 2.0]} for i in range(21)}
    records = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as c, \
            Client(c, set_as_default=False) as client:
        run_on_client(client, "wrappers_for_tests:scripted_wrapper", by_index, str(tmp_path), records.append,
                      group_size=21, stall_after=60, key_prefix="resqmp-old", on_stall=lambda *a: None)
        events = [e for e in client.get_events(STARTED_TOPIC) if e[1].get("run") == "resqmp-old"]
    assert len(records) == 21 and len(events) > 1, events
    old = _LauncherOf891cd9c("resqmp-old")
    for event in events:
        old.started(event)
    assert sorted(old._since) == [20], (old._since, events)
