"""Send tasks to a Dask client and hand back each final result as it arrives.

Consecutive tasks go to Dask in groups (see group_size_for): one Dask task runs a few resqmp
tasks in a row on a worker (run_group), which saves Dask's per-task overhead on short tasks.
Each task still gets its own result record.

A task that raises comes back as a failed record (see tasks.run_task). A group whose worker died
is re-run by the scheduler up to `distributed.scheduler.allowed-failures` times, then each of its
tasks is reported failed; a task that raised is re-run, alone, only when retry_on_error is set.

A task past tasks.timeout comes back as a timed-out record from a worker that has stopped taking
tasks; that worker is then killed (its nanny starts a fresh one) without waiting. Records are
fetched as each Dask task finishes, so a killed worker never holds one the client still needs; a
group that was only queued on it is sent again without counting as a death.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, NamedTuple

from resqmp import interrupts
from resqmp.tasks import pickled, run_task

log = logging.getLogger(__name__)

#: the most tasks `auto` puts in one Dask task: Dask's client, scheduler and comms cost the
#: launcher ~8 ms of CPU per Dask task whatever its length (issue 11: 0.5 ms per task in groups
#: of 16, 0.25 in groups of 32); AUTO_GROUP_SECONDS and AUTO_TASKS_PER_WORKER keep bigger groups
#: short and the batch's end balanced, so this cap only matters for big batches of short tasks
AUTO_MAX_GROUP = 64
#: `auto` groups only when each worker has at least this many tasks per task in a group
AUTO_TASKS_PER_WORKER = 16
#: `auto` keeps a group shorter than this: Dask's few ms per task matter next to tasks of tens of
#: ms, not next to seconds, and a longer group delays results and costs more when its worker dies
AUTO_GROUP_SECONDS = 1.0
#: `auto` sends this many tasks alone per worker, timing them, before it sizes the groups of the
#: rest: a worker's first task runs cold (it loads code and caches) and is not timed, the second
#: is, and a third keeps the worker busy while the decision is made
AUTO_PROBE_PER_WORKER = 3


def auto_group_size(n_tasks: int, workers: int, task_seconds: float | None = None) -> int:
    """max(1, min(64, n_tasks // (16 × workers))): groups only when every worker has many tasks,
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


#: within a group, task starts reach the launcher at most this often per group (seconds; the
#: group's first at once): see _StartNews
START_NEWS_INTERVAL = 0.5
#: the scheduler's event topic that reports workers leaving, with the tasks they held
WORKER_EVENTS = "all"
#: workers announce each task they start under this event topic (one for every run, so a
#: long-lived scheduler keeps one bounded event log; messages carry the run's key prefix)
STARTED_TOPIC = "resqmp-task-started"
#: seconds the scheduler gives a nanny to kill a worker whose task timed out
KILL_TIMEOUT = 30
#: seconds a kill waits for the scheduler to let go of the run's results on that worker (_restart)
RELEASE_WAIT = 5


@dataclass(frozen=True)
class Premerge:
    """Which workers make group partials (resqmp.premerge): those running as `uid`, the launcher's
    (it reads the partials, and removes them with the task folder: another uid's 0700 groups/ it
    can do neither), and with `away_from`, only those on another host than that one (the
    launcher's: where workers share its cores, a partial costs more than it saves)."""
    uid: int
    away_from: str | None = None

    def admits_this_worker(self) -> bool:
        return os.geteuid() == self.uid and (self.away_from is None or socket.gethostname() != self.away_from)


def premerge_rule(setting: bool | str | None) -> Premerge | None:
    """tasks.premerge as a rule for this launcher's workers: true -> every worker of its uid;
    'auto' (or unset) -> those of its uid on another host; false -> none."""
    if setting is None or setting == "auto":
        return Premerge(os.geteuid(), away_from=socket.gethostname())
    if setting is True or setting == "true":
        return Premerge(os.geteuid())
    return None


def run_group(function, items: list[tuple[int, dict]], parent_tmp_dir: str,
              timeout: float | None = None, announce: str | None = None,
              premerge: "bool | Premerge" = False, run: str | None = None) -> list[dict]:
    """Run on a worker: the tasks of one group in a row; their records, in order (never raises).

    Stops after a task that timed out: its thread is still running and the client restarts this
    worker, so the tasks not yet run are left for the client to send again. With `announce` (the
    run's key prefix), the tasks' starts are logged as Dask events (STARTED_TOPIC, coalesced:
    _StartNews), so the client can say which task runs where when a run stalls. With `premerge`,
    the successful tasks' outputs are gathered into one group partial (resqmp.premerge) named in
    their records, so the launcher opens one file per group; a Premerge rule instead of True:
    only on a worker it admits (see premerge_rule). `run`: the run's key prefix (premerge_group
    warns once per run)."""
    records = []
    news = _StartNews(announce) if announce else None
    try:
        for index, kwargs in items:
            if news is not None:
                news.started(index, records[-1]["index"] if records else None)
            record = run_task(function, kwargs, index, parent_tmp_dir, timeout)
            records.append(record)
            if record.get("timed_out"):
                break
    finally:
        if news is not None:
            news.close()
    if isinstance(premerge, Premerge):
        premerge = premerge.admits_this_worker()
    if premerge and records and not records[-1].get("timed_out"):    # a worker about to be restarted returns at once
        from resqmp.allocator import task_heap
        from resqmp.premerge import premerge_group
        with task_heap():            # it loads and copies the group's arrays: as a task does
            premerge_group(records, parent_tmp_dir, run)
    return records


class _StartNews:
    """A group's task starts, as STARTED_TOPIC events for the launcher's stall report. The group's
    first start goes at once; later ones at most every START_NEWS_INTERVAL s, coalesced: the task
    starting last, how long it has run, and the tasks finished since the last message. Each event
    costs the launcher 0.6–1.5 ms of CPU (the scheduler of the local and jobqueue backends runs in its
    process): a group of short tasks sends one or two, not one per task. Never raises."""

    def __init__(self, run: str):
        self.run = run
        self._lock = threading.Lock()
        self._worker = None
        try:
            from distributed import get_worker
            self._worker = get_worker()
        except Exception:   # noqa: BLE001 - progress news only: never fail a task for it
            pass
        self._finished: list[int] = []             # finished since the last message
        self._running: tuple[int, float] | None = None    # (index, monotonic start), not yet told
        self._told: int | None = None              # the task the last message said runs
        self._last_sent = -float("inf")
        self._timer = False
        self._closed = False

    def started(self, index: int, done: int | None) -> None:
        """Task `index` starts (on the task's thread); `done`, the group's task before it, finished."""
        if self._worker is None:
            return
        now = time.monotonic()
        with self._lock:
            if done is not None:
                self._finished.append(done)
            self._running = (index, now)
            if now - self._last_sent >= START_NEWS_INTERVAL:
                msg = self._take(now)
            else:
                msg = None
                if not self._timer:
                    self._timer = True
                    delay = self._last_sent + START_NEWS_INTERVAL - now
                    self._on_loop(lambda: self._worker.loop.call_later(delay, self._flush))
        if msg is not None:
            self._send(msg)

    def close(self) -> None:
        """The group ended (its records now go back with its result): nothing more is told, so no
        late message can say one of its tasks runs after the launcher has its record."""
        with self._lock:
            self._closed = True

    def _flush(self) -> None:
        # on the worker's event loop: taking and sending in one callback keeps the message ahead
        # of the group's result, which that loop sends only after the task's thread returned
        with self._lock:
            self._timer = False
            msg = self._take(time.monotonic()) if self._running is not None and not self._closed else None
        if msg is not None:
            self._send(msg)

    def _take(self, now: float) -> dict:
        index, since = self._running
        # `done`, as resqmp up to 891cd9c sends and reads it, an int or None: the task the last
        # message said runs (finished now, it is among `finished`), so a launcher of that version
        # drops it from its running tasks; `finished`: all the tasks finished since that message
        msg = {"run": self.run, "index": index, "done": self._told, "finished": self._finished,
               "age": now - since, "worker": self._worker.address}
        self._finished, self._running, self._last_sent, self._told = [], None, now, index
        return msg

    def _send(self, msg: dict) -> None:
        try:
            self._worker.log_event(STARTED_TOPIC, msg)
        except Exception:   # noqa: BLE001 - progress news only
            pass

    def _on_loop(self, callback) -> None:
        try:
            self._worker.loop.add_callback(callback)
        except Exception:   # noqa: BLE001 - progress news only
            pass


def _lost(index: int, error: BaseException) -> dict:
    name = type(error).__name__
    text = "worker died while running it" if name == "KilledWorker" else str(error)
    return {"index": index, "success": False, "epc_file": None, "uuid_list": [], "worker": None,
            "seconds": None, "error": f"{name}: {text}", "exception": pickled(error)}


class _Finished:
    """Each Dask task's records, fetched as soon as it finishes (in distributed's callback thread)
    and its future released at once. A worker restarted after a timeout then holds no result the
    client still wants, so Dask never recomputes a finished task because of a restart.

    Waiting (`wait`) and taking (`take`) are apart: a signal that lands while the launcher waits
    leaves every fetched item in the queue, where run_on_client's way out still finds it."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._arrived = threading.Semaphore(0)      # released once per item queued
        self.outstanding = 0

    def watch(self, fut, group: list[int], again: int) -> None:
        self.outstanding += 1

        def done(f) -> None:
            try:
                item = (f.key, group, again, f.result(), None)
            except BaseException as e:   # noqa: BLE001 - KilledWorker, CancelledError, lost comms
                item = (f.key, group, again, None, e)
            f.release()
            self._queue.put(item)
            self._arrived.release()

        fut.add_done_callback(done)

    def wait(self, seconds: float) -> bool:
        """True once an item is queued for the next `take`; False after `seconds` without one."""
        return self._arrived.acquire(timeout=seconds)

    def take(self):
        """(key, group, times sent again uncounted, records or None, error or None), taken out of
        the queue; None when it is empty."""
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return None
        self.outstanding -= 1
        return item


class _Running:
    """Which task runs on which worker since when (from the workers' STARTED_TOPIC events)."""

    def __init__(self, run: str):
        self.run = run
        self._lock = threading.Lock()
        self._since: dict[int, tuple[str, float]] = {}
        # finished, their group's records not back yet: index -> the worker that ran it (its
        # records die with that worker, and the group runs again: see `left`)
        self._done: dict[int, str] = {}

    def started(self, event) -> None:      # distributed's event handler: (timestamp, msg)
        msg = event[1]
        if isinstance(msg, dict) and msg.get("run") == self.run:
            try:
                index = int(msg["index"])
                # `finished`, a sequence from _StartNews (msgpack makes it a tuple); else `done`, an
                # int or None from a worker of resqmp up to 891cd9c (one message per start)
                done = msg["finished"] if "finished" in msg else msg.get("done")
                done = [] if done is None else [int(i) for i in done] if isinstance(done, (list, tuple)) \
                    else [int(done)]
                # how long it has run, as the worker measured it: no clock compared across hosts
                since = time.monotonic() - max(0.0, float(msg.get("age") or 0.0))
            except (KeyError, TypeError, ValueError):
                return                               # not news this resqmp can read
            worker = str(msg.get("worker"))
            with self._lock:
                for i in done:                       # their records come back with the group's
                    self._since.pop(i, None)
                    self._done[i] = worker
                self._since[index] = (worker, since)
                self._done.pop(index, None)          # run again (its worker died)

    def ended(self, index: int) -> None:
        with self._lock:
            self._since.pop(index, None)
            self._done.pop(index, None)

    def left(self, worker: str) -> None:
        """The worker left (or resqmp restarts it): its tasks no longer run, and those it finished
        whose records had not come back wait again (Dask sends their group again)."""
        with self._lock:
            for i in [i for i, (w, _) in self._since.items() if w == worker]:
                del self._since[i]
            for i in [i for i, w in self._done.items() if w == worker]:
                del self._done[i]

    def snapshot(self) -> tuple[list[dict], int]:
        """([{index, worker, seconds}] of the tasks running now, how many others have finished)."""
        now = time.monotonic()
        with self._lock:
            running = [{"index": i, "worker": w, "seconds": now - t} for i, (w, t) in sorted(self._since.items())]
            return running, len(self._done)


def run_on_client(client, function, kwargs_by_index: dict[int, dict], run_dir: str,
                  on_result: Callable[[dict], None], retries: int = 0, retry_on_error: bool = False,
                  timeout: float | None = None, key_prefix: str | None = None,
                  group_size: int | str = 1, workers: int | None = None, keep_exceptions: bool = False,
                  stall_after: float | None = None,
                  on_stall: Callable[[float, list[dict], int, float], None] | None = None,
                  premerge: bool | str | None = False,
                  on_final: Callable[[list[dict]], None] | None = None,
                  more: Callable[[], dict[int, dict]] | None = None) -> int:
    """Run every task; call on_result once per task index with its final record (with "attempts":
    how many times it was sent to a worker, and "lost_workers": the workers that left while holding
    it) as soon as its group finishes. group_size: tasks per Dask task, or 'auto' (see
    auto_group_size, with `workers` the number of workers the tasks share, by default the task
    slots connected now, at least 1): then the first
    AUTO_PROBE_PER_WORKER × workers tasks go alone, and the median seconds of those that were not
    their worker's first task size the groups of the rest. Returns the group size used for the
    bulk of the batch.

    keep_exceptions: records keep "exception" (the pickled exception of a task that raised, for
    the Python API); otherwise it is dropped (records stay JSON data). stall_after: when no task
    has finished for that many seconds, on_stall(idle seconds, running tasks [{index, worker,
    seconds}], tasks not started, seconds of silence before the next call) is called; then again
    each time the silence doubles. premerge: groups of several tasks come back with a group
    partial (run_group), named in each record's "partial", made only by workers of this process's
    uid; 'auto': only by those on another host than this process's (premerge_rule). A partial moves merge work from the launcher to the
    worker and costs more in all (the worker loads and writes the outputs once more): it pays
    where the launcher is a ceiling of its own, not where the workers share its cores.

    on_final (the launcher's journal): called with all the final records of each Dask task at once,
    as soon as it is taken from the queue and before on_result gets any of them, where no signal
    cuts it (interrupts.shielded); a signal recorded meanwhile is raised right after, before
    on_result. When the run ends with an exception (a Ctrl-C in on_result, say), on_final also
    gets the final records of every Dask task already fetched and still queued, nothing merged
    and nothing sent: a task that would be sent again (retry_on_error with attempts left, a
    timed-out group's tasks not run, a group lost to resqmp's own restart) is not final and is
    left out. Final means on_result would have got it with the same fields.

    more (a resume's tasks whose journaled output on_result found damaged): called after on_result
    has had a Dask task's records; the tasks it returns (index -> kwargs, none of this run's) are
    sent, each alone, and are part of the run from then on."""
    # Unique per run: two launches on one scheduler (the external backend) must never share a key.
    key_prefix = key_prefix or f"resqmp-{uuid.uuid4().hex[:8]}"
    premerge = premerge_rule(premerge)          # each worker applies it to itself (run_group)
    indexes = sorted(kwargs_by_index)
    auto = group_size is None or group_size == "auto"
    if workers is None:
        workers = max(1, sum(client.nthreads().values())) if auto else 1
    sizer = _GroupSizer(group_size, indexes, workers)
    attempts = {i: 1 for i in indexes}
    finished = _Finished()
    watching = bool(stall_after and on_stall)
    running = _Running(key_prefix)
    if watching:
        client.subscribe_topic(STARTED_TOPIC, running.started)
    restarted: set[str] = set()          # workers resqmp restarted after a timeout

    def submit(group: list[int], again: int = 0) -> None:
        attempt = max(attempts[i] for i in group)
        key = f"{key_prefix}-{group[0]}-{group[-1]}-a{attempt}" + (f"-r{again}" if again else "")
        fut = client.submit(run_group, function, [(i, kwargs_by_index[i]) for i in group], run_dir, timeout,
                            key_prefix if watching else None, premerge if len(group) > 1 else None, key_prefix,
                            key=key, pure=False)
        finished.watch(fut, group, again)

    def submit_in_groups(part: list[int], n: int) -> None:
        for k in range(0, len(part), n):
            submit(part[k:k + n])

    # Submit in task order: with streaming recombination, early indexes finishing first lets the
    # merge proceed while later tasks still run.
    # The scheduler reports every worker that leaves, with the tasks it held (it sends those again,
    # up to allowed-failures times); remember which of this run's tasks were among them. A worker
    # resqmp restarted after a timeout does not count: the tasks queued there had not run.
    lost: dict[str, list[str]] = {}
    lost_workers: dict[int, list[str]] = {i: [] for i in kwargs_by_index}
    resent = {i: 0 for i in kwargs_by_index}

    def on_event(event) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") == "remove-worker":
            running.left(str(msg.get("worker")))
            if msg.get("worker") in restarted:
                return
            for key in {*msg.get("processing-tasks", ()), *msg.get("lost-computed-tasks", ())}:
                if isinstance(key, str) and key.startswith(key_prefix):
                    lost.setdefault(key, []).append(msg.get("worker"))

    def settle(item) -> _Settled:
        """One finished Dask task's final records, what it needs sent again and which worker to
        restart; only bookkeeping: nothing is sent, nothing called back."""
        key, group, again, records, error = item
        given_up = False           # KilledWorker: the last worker lost was the last attempt
        if records is None:
            if _killed_by_our_restart(error, restarted):
                # an innocent bystander: queued on a worker resqmp restarted for another
                # task's timeout; not a death of its own, so it is sent again uncounted
                return _Settled(None, [], [(group, again + 1)], None)
            given_up = type(error).__name__ == "KilledWorker"
            if given_up and len(group) > 1:
                # Dask gave up on the group (its workers died, allowed-failures times): which of
                # its tasks killed them is unknown, so each is sent again alone, with its own
                # allowed-failures; a group is resqmp's shortcut, never why a task fails
                gone = lost.pop(key, [])
                for i in group:
                    lost_workers[i] += gone
                    resent[i] += max(1, len(gone))       # it died at least once
                    running.ended(i)
                return _Settled(None, [], [([i], 0) for i in group], None)
            records = [_lost(i, error) for i in group]
        gone = lost.pop(key, [])
        for i in group:
            lost_workers[i] += gone
            resent[i] += max(0, len(gone) - given_up)
        stuck = next((r for r in records if r.get("timed_out")), None)
        send = []
        not_run = group[len(records):]           # after a timeout: sent again, to a fresh worker
        if not_run:
            send.append((not_run, 0))
        final = []
        for result in records:
            i = result["index"]
            running.ended(i)
            if result.get("error") and retry_on_error and attempts[i] <= retries:
                attempts[i] += 1
                send.append(([i], 0))               # alone: the rest of its group is done
                continue
            # a worker that left while holding the task (job cancelled, node lost, OOM kill) made
            # the scheduler send it again: that was an attempt too
            result["attempts"] = attempts[i] + resent[i]
            result["lost_workers"] = lost_workers[i]
            if not keep_exceptions:
                result.pop("exception", None)
            final.append(result)
        return _Settled(records, final, send, stuck.get("worker") if stuck is not None else None)

    client.subscribe_topic(WORKER_EVENTS, on_event)
    submit_in_groups(sizer.first, sizer.size)
    remaining = len(kwargs_by_index)
    quiet_since, next_report = time.monotonic(), stall_after
    try:
        while finished.outstanding:
            interrupts.raise_if_requested()      # before taking a result: none is taken and dropped
            if not finished.wait(1.0):
                idle = time.monotonic() - quiet_since
                if watching and idle >= next_report:
                    now_running, finished_early = running.snapshot()
                    on_stall(idle, now_running, remaining - len(now_running) - finished_early, next_report * 2)
                    next_report *= 2
                continue
            # from the queue to on_final, no signal cuts in: a result taken is a result journaled
            with interrupts.shielded():
                settled = settle(finished.take())
                if settled.final and on_final is not None:
                    on_final(settled.final)
            interrupts.raise_if_requested()      # a signal meanwhile: before anything is merged
            if settled.records is not None and sizer.held:
                rest = sizer.timed(settled.records, last=not finished.outstanding)
                if rest:
                    submit_in_groups(rest, sizer.size)
            if settled.restart:
                restarted.add(settled.restart)
                running.left(settled.restart)
                _restart(client, settled.restart, key_prefix)
            for group, again in settled.send:
                submit(group, again)
            for result in settled.final:
                remaining -= 1
                quiet_since, next_report = time.monotonic(), stall_after
                on_result(result)
            for i, kwargs in sorted((more() if more is not None else {}).items()):
                if i in kwargs_by_index:
                    raise ValueError(f"task {i} is already part of this run")
                kwargs_by_index[i] = kwargs
                attempts[i], lost_workers[i], resent[i] = 1, [], 0
                remaining += 1
                submit([i])
    except BaseException:
        if on_final is not None:
            with interrupts.shielded():          # later signals are recorded, never cut this
                _hand_on_fetched(finished, settle, on_final)
        raise
    finally:
        for topic in (WORKER_EVENTS, STARTED_TOPIC) if watching else (WORKER_EVENTS,):
            try:
                client.unsubscribe_topic(topic)
            except Exception:   # noqa: BLE001 - a closing client; never hide why the loop ended
                log.debug("could not unsubscribe from %s", topic, exc_info=True)
    return sizer.size


class _Settled(NamedTuple):
    records: list[dict] | None           # all its records (None: lost to resqmp's own restart)
    final: list[dict]                    # those handed on (on_final, on_result)
    send: list[tuple[list[int], int]]    # (tasks, times sent again uncounted) to send again
    restart: str | None                  # the worker of a timed-out task


def _hand_on_fetched(finished: _Finished, settle, on_final) -> None:
    """On the way out of a run that ended with an exception: the final records of every Dask task
    already fetched go to on_final (the journal), so a resume does not run them again."""
    while (item := finished.take()) is not None:
        try:
            settled = settle(item)
            if settled.final:
                on_final(settled.final)
        except Exception:   # noqa: BLE001 - never hide why the run ended (e.g. a full disk)
            log.debug("could not hand on the records already fetched", exc_info=True)
            return


class _GroupSizer:
    """Tasks per Dask task for one run. A fixed setting is used as given; `auto` with room to
    group first sends AUTO_PROBE_PER_WORKER tasks per worker alone (`first`), holding the rest
    back, and sizes the groups of the rest from how long those took (`timed`)."""

    def __init__(self, setting, indexes: list[int], workers: int):
        self.n_tasks, self.workers = len(indexes), workers
        self.size = group_size_for(setting, self.n_tasks, workers)
        self.first, self.held = indexes, []
        self._warm: set[str] = set()              # workers whose first (cold) task came back
        self._cold: list[float] = []
        self._timed: list[float] = []
        self._decide_after = 0
        if (setting is None or setting == "auto") and self.size > 1:
            n_probe = AUTO_PROBE_PER_WORKER * max(1, workers)
            self.first, self.held = indexes[:n_probe], indexes[n_probe:]
            self._decide_after = max(1, min(workers, 8))
            self.size = 1

    def timed(self, records: list[dict], last: bool) -> list[int]:
        """Note the seconds of returned probe tasks; once enough are in (or `last`: nothing else
        is out), set `size` and return the held tasks to send now ([] until then)."""
        for r in records:
            # a task that failed without timing counts as long: no grouping on a doubtful guess
            seconds = r["seconds"] if r.get("seconds") is not None else float("inf")
            if r.get("worker") is not None and r["worker"] not in self._warm:
                self._warm.add(r["worker"])
                self._cold.append(seconds)
            else:
                self._timed.append(seconds)
        if len(self._timed) < self._decide_after and not last:
            return []
        # cold times only when nothing else was timed (more workers than planned)
        measured = self._timed or self._cold or [float("inf")]
        self.size = group_size_for("auto", self.n_tasks, self.workers, statistics.median(measured))
        rest, self.held = self.held, []
        return rest


def _killed_by_our_restart(error: BaseException | None, restarted: set[str]) -> bool:
    last = getattr(error, "last_worker", None) if type(error).__name__ == "KilledWorker" else None
    return getattr(last, "address", None) in restarted


def _restart(client, worker: str, key_prefix: str) -> None:
    """Have the worker still running a timed-out task killed; its nanny starts a fresh one. The
    batch waits for nothing: the worker already stopped taking tasks (tasks._stop_taking_tasks), so
    it goes on with the other workers while this one is killed and replaced. The kill itself first
    waits (RELEASE_WAIT at most) until the scheduler holds none of this run's results on that
    worker: a result the client fetched is released over another connection than this request,
    and a worker removed before the release arrives makes the scheduler compute it again."""
    async def kill() -> None:
        try:
            deadline = time.monotonic() + RELEASE_WAIT
            while time.monotonic() < deadline:
                held = (await client.scheduler.has_what(workers=[worker])).get(worker, ())
                if not any(str(key).startswith(key_prefix) for key in held):
                    break
                await asyncio.sleep(0.05)
        except Exception:   # noqa: BLE001 - only a courtesy: the worker is killed all the same
            log.debug("could not ask what %s holds", worker, exc_info=True)
        try:
            await client.scheduler.restart_workers(workers=[worker], timeout=KILL_TIMEOUT, wait_for_workers=False,
                                                   on_error="return", stimulus_id=f"resqmp-timeout-{time.time()}")
        except Exception:   # noqa: BLE001 - the worker may already be gone
            log.debug("restarting %s failed", worker, exc_info=True)

    client.loop.add_callback(kill)


def run_in_process(function, kwargs_by_index: dict[int, dict], run_dir: str,
                   on_result: Callable[[dict], None], keep_exceptions: bool = False) -> None:
    for i in sorted(kwargs_by_index):
        result = run_task(function, kwargs_by_index[i], i, run_dir)
        result["attempts"] = 1
        if not keep_exceptions:
            result.pop("exception", None)
        on_result(result)
