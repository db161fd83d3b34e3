"""Send tasks to a Dask client and hand back each final result as it arrives.

Consecutive tasks go to Dask in groups (see group_size_for): one Dask task runs a few resqmp
tasks in a row on a worker (run_group), which saves Dask's per-task overhead on short tasks.
Each task still gets its own result record.

A task that raises comes back as a failed record (see tasks.run_task). A group whose worker died
is re-run by the scheduler up to `distributed.scheduler.allowed-failures` times, then each of its
tasks is reported failed; a task that raised is re-run, alone, only when retry_on_error is set.
"""
from __future__ import annotations

import statistics
import uuid
from typing import Callable

from distributed import as_completed

from resqmp.tasks import run_task

#: the most tasks `auto` puts in one Dask task
AUTO_MAX_GROUP = 4
#: `auto` groups only when each worker has at least this many tasks per task in a group
AUTO_TASKS_PER_WORKER = 16
#: `auto` keeps a group shorter than this: Dask's few ms per task matter next to tasks of tens of
#: ms, not next to seconds, and a longer group delays results and costs more when its worker dies
AUTO_GROUP_SECONDS = 1.0
#: the scheduler's event topic that reports workers leaving, with the tasks they held
WORKER_EVENTS = "all"
#: `auto` sends this many tasks alone per worker, timing them, before it sizes the groups of the
#: rest: a worker's first task runs cold (it loads code and caches) and is not timed, the second
#: is, and a third keeps the worker busy while the decision is made
AUTO_PROBE_PER_WORKER = 3


def auto_group_size(n_tasks: int, workers: int, task_seconds: float | None = None) -> int:
    """max(1, min(4, n_tasks // (16 × workers))): groups only when every worker has many tasks,
    so the imbalance at the end of the batch (a worker still busy with a whole group while the
    others are idle) stays a small share of the run. Given the measured seconds of a task, also
    no more tasks than fit in AUTO_GROUP_SECONDS."""
    size = max(1, min(AUTO_MAX_GROUP, n_tasks // (AUTO_TASKS_PER_WORKER * max(1, workers))))
    if task_seconds is not None and task_seconds > 0:
        size = max(1, min(size, int(AUTO_GROUP_SECONDS // task_seconds)))
    return size


def group_size_for(setting: int | str | None, n_tasks: int, workers: int,
                   task_seconds: float | None = None) -> int:
    """The profile's tasks.group_size ('auto', None meaning 'auto', or a positive integer) as a count."""
    if setting is None or setting == "auto":
        return auto_group_size(n_tasks, workers, task_seconds)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ValueError(f"tasks.group_size: expected 'auto' or an integer >= 1, got {setting!r}")
    return setting


def run_group(function, items: list[tuple[int, dict]], parent_tmp_dir: str,
              timeout: float | None = None) -> list[dict]:
    """Run on a worker: the tasks of one group in a row; their records, in order (never raises).

    Stops after a task that timed out: its thread is still running and the client restarts this
    worker, so the tasks not yet run are left for the client to send again."""
    records = []
    for index, kwargs in items:
        record = run_task(function, kwargs, index, parent_tmp_dir, timeout)
        records.append(record)
        if record.get("timed_out"):
            break
    return records


def _lost(index: int, error: BaseException) -> dict:
    name = type(error).__name__
    text = "worker died while running it" if name == "KilledWorker" else str(error)
    return {"index": index, "success": False, "epc_file": None, "uuid_list": [], "worker": None,
            "seconds": None, "error": f"{name}: {text}"}


def run_on_client(client, function, kwargs_by_index: dict[int, dict], run_dir: str,
                  on_result: Callable[[dict], None], retries: int = 0, retry_on_error: bool = False,
                  timeout: float | None = None, key_prefix: str | None = None,
                  group_size: int | str = 1, workers: int | None = None) -> int:
    """Run every task; call on_result once per task index with its final record (with "attempts":
    how many times it was sent to a worker, and "lost_workers": the workers that left while holding
    it) as soon as its group finishes. group_size: tasks per Dask task, or 'auto' (see
    auto_group_size, with `workers` the number of workers the tasks share, by default the task
    slots connected now, at least 1): then the first
    AUTO_PROBE_PER_WORKER × workers tasks go alone, and the median seconds of those that were not
    their worker's first task size the groups of the rest. Returns the group size used for the
    bulk of the batch."""
    # Unique per run: two launches on one scheduler (the external backend) must never share a key.
    key_prefix = key_prefix or f"resqmp-{uuid.uuid4().hex[:8]}"
    indexes = sorted(kwargs_by_index)
    auto = group_size is None or group_size == "auto"
    if workers is None:
        workers = max(1, sum(client.nthreads().values())) if auto else 1
    size = group_size_for(group_size, len(indexes), workers)
    attempts = {i: 1 for i in indexes}

    def submit(group: list[int]):
        attempt = max(attempts[i] for i in group)
        fut = client.submit(run_group, function, [(i, kwargs_by_index[i]) for i in group], run_dir, timeout,
                            key=f"{key_prefix}-{group[0]}-{group[-1]}-a{attempt}", pure=False)
        fut.resqmp_group = group
        return fut

    def submit_in_groups(part: list[int], n: int) -> list:
        return [submit(part[k:k + n]) for k in range(0, len(part), n)]

    # auto with room to group: time a few tasks first (see AUTO_PROBE_PER_WORKER)
    probe_seconds: list[float] = []
    cold_seconds: list[float] = []
    warm: set[str] = set()
    held: list[int] = []
    decide_after = 0
    if auto and size > 1:
        n_probe = AUTO_PROBE_PER_WORKER * max(1, workers)
        held = indexes[n_probe:]
        indexes = indexes[:n_probe]
        decide_after = max(1, min(workers, 8))
        size = 1
    # Submit in task order: with streaming recombination, early indexes finishing first lets the
    # merge proceed while later tasks still run.
    # The scheduler reports every worker that leaves, with the tasks it held (it sends those again,
    # up to allowed-failures times); remember which of this run's tasks were among them.
    lost: dict[str, list[str]] = {}
    lost_workers: dict[int, list[str]] = {i: [] for i in kwargs_by_index}
    resent = {i: 0 for i in kwargs_by_index}

    def on_event(event) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") == "remove-worker":
            for key in {*msg.get("processing-tasks", ()), *msg.get("lost-computed-tasks", ())}:
                if isinstance(key, str) and key.startswith(key_prefix):
                    lost.setdefault(key, []).append(msg.get("worker"))

    client.subscribe_topic(WORKER_EVENTS, on_event)
    try:
        pending = as_completed(submit_in_groups(indexes, size), loop=client.loop)
        for fut in pending:
            group = fut.resqmp_group
            given_up = False           # KilledWorker: the last worker lost was the last attempt
            try:
                records = fut.result()
            except Exception as e:   # noqa: BLE001 - KilledWorker, CancelledError, communication errors
                records = [_lost(i, e) for i in group]
                given_up = type(e).__name__ == "KilledWorker"
            gone = lost.pop(fut.key, [])
            for i in group:
                lost_workers[i] += gone
                resent[i] += max(0, len(gone) - given_up)
            fut.release()
            if held:
                for r in records:
                    # a task that failed without timing counts as long: no grouping on a doubtful guess
                    seconds = r["seconds"] if r.get("seconds") is not None else float("inf")
                    if r.get("worker") is not None and r["worker"] not in warm:
                        warm.add(r["worker"])
                        cold_seconds.append(seconds)
                    else:
                        probe_seconds.append(seconds)
                if len(probe_seconds) >= decide_after or pending.is_empty():
                    # cold times only when nothing else was timed (more workers than planned)
                    measured = probe_seconds or cold_seconds or [float("inf")]
                    size = group_size_for("auto", len(kwargs_by_index), workers, statistics.median(measured))
                    pending.update(submit_in_groups(held, size))
                    held = []
            stuck = next((r for r in records if r.get("timed_out")), None)
            if stuck is not None:
                _restart(client, stuck.get("worker"))
            not_run = group[len(records):]           # after a timeout: sent again, to a fresh worker
            if not_run:
                pending.add(submit(not_run))
            for result in records:
                i = result["index"]
                if result.get("error") and retry_on_error and attempts[i] <= retries:
                    attempts[i] += 1
                    pending.add(submit([i]))         # alone: the rest of its group is done
                    continue
                # a worker that left while holding the task (job cancelled, node lost, OOM kill) made
                # the scheduler send it again: that was an attempt too
                result["attempts"] = attempts[i] + resent[i]
                result["lost_workers"] = lost_workers[i]
                on_result(result)
    finally:
        client.unsubscribe_topic(WORKER_EVENTS)
    return size


def _restart(client, worker: str | None) -> None:
    """Kill the worker still running a timed-out task (its nanny starts a fresh one)."""
    if not worker:
        return
    try:
        client.restart_workers([worker], timeout=120, raise_for_error=False)
    except Exception:   # noqa: BLE001 - the worker may already be gone
        pass


def run_in_process(function, kwargs_by_index: dict[int, dict], run_dir: str,
                   on_result: Callable[[dict], None]) -> None:
    for i in sorted(kwargs_by_index):
        result = run_task(function, kwargs_by_index[i], i, run_dir)
        result["attempts"] = 1
        on_result(result)
