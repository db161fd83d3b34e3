"""What runs on a worker for each task: call the wrapper, never let an exception escape.

resqpy's function_multiprocessing loses every result when one task raises; here a raising task
becomes a failed result with its error text, and the batch goes on.
"""
from __future__ import annotations

import contextvars
import os
import pickle
import socket
import threading
import time
import traceback
import uuid
from typing import Any, Callable

from resqmp.allocator import task_heap
from resqmp.thread_limits import limit_task_threads


def _where() -> str:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _stop_taking_tasks() -> None:
    """This worker is about to be restarted (the only way to stop a stuck task thread): it stops
    starting tasks now, before the timed-out record goes back, so that no other task starts here
    only to be killed with it. (A task queued here is sent elsewhere when the worker goes.)"""
    try:
        from distributed import get_worker
        from distributed.core import Status
        worker = get_worker()
    except (ImportError, ValueError):
        return
    applied = threading.Event()

    def close_gracefully() -> None:
        try:
            # not `paused`: the memory monitor would resume a paused worker
            worker.status = Status.closing_gracefully
        finally:
            applied.set()

    worker.loop.add_callback(close_gracefully)
    applied.wait(10)


def uuid_text(entry) -> str:
    """A wrapper's uuid_list entry as the record's text (records are JSON, journaled): a uuid int,
    which resqpy's recombination reads as that uuid (sort_uuids_list takes "the uuids list (or
    uuid ints list)", bu.uuid_as_int), is its canonical uuid string, not its decimal digits (they
    name no part: the task was refused as a wrapper's malformed uuid where resqpy merges it).
    Canonical strings order as the ints do (fixed-width lower-case hex), so resqpy's ordering of
    equally ranked parts is kept. Anything else is str(entry), as before (a uuid.UUID: its
    canonical string; what is no uuid stays what merge.unknown_uuid names)."""
    if isinstance(entry, int) and not isinstance(entry, bool):
        try:
            return str(uuid.UUID(int=entry))
        except ValueError:           # negative or wider than 128 bits: resqpy fails on it too
            pass
    return str(entry)


def _is_uuid_collection(uuid_list) -> bool:
    """Is it what resqpy's recombination iterates as uuids (a list, tuple, set...), not None, a
    single string read character by character, or something it cannot iterate?"""
    if uuid_list is None or isinstance(uuid_list, (str, bytes, bytearray)):
        return False
    try:
        iter(uuid_list)
    except TypeError:
        return False
    return True


def run_task(function: Callable | str, kwargs: dict[str, Any], index: int, parent_tmp_dir: str,
             timeout: float | None = None) -> dict:
    """Call function(index=, parent_tmp_dir=, **kwargs); return a result record (never raises).

    With a timeout the call runs in a helper thread; past the timeout the record says
    `timed_out` and the caller restarts this worker, the only way to stop a stuck thread."""
    if timeout:
        box: dict[str, dict] = {}
        # the task's context goes with it: Dask's get_worker() reads a context variable, which a new
        # thread would not see (then task_heap, limit_task_threads and _where take it for no worker)
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=lambda: box.update(r=context.run(run_task, function, kwargs, index, parent_tmp_dir)),
            name=f"resqmp-task-{index}", daemon=True)
        start = time.perf_counter()
        thread.start()
        thread.join(timeout)
        if "r" in box:
            return box["r"]
        _stop_taking_tasks()
        return {"index": index, "success": False, "epc_file": None, "uuid_list": [], "timed_out": True,
                "error": f"TimeoutError: still running after {timeout:g} s (tasks.timeout)",
                "worker": _where(), "pid": os.getpid(), "seconds": round(time.perf_counter() - start, 4)}
    from resqmp.batch import import_reference
    start = time.perf_counter()
    record: dict[str, Any] = {"index": index, "success": False, "epc_file": None, "uuid_list": [],
                              "error": None, "worker": _where(), "pid": os.getpid()}
    try:
        fn = import_reference(function) if isinstance(function, str) else function
        limit_task_threads()         # on a cluster resqmp did not start too (see thread_limits)
        with task_heap():            # Dask's trim threshold unmaps every large array (see allocator)
            returned = fn(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)
        _, success, epc_file, uuid_list = returned
        record.update(success=bool(success), epc_file=None if epc_file is None else str(epc_file))
        malformed = record["success"] and epc_file is not None and not _is_uuid_collection(uuid_list)
        if malformed:
            # resqpy's recombination raises on it (sort_uuids_list iterates it as uuids) and writes
            # nothing; taken as no uuids, the task would count a success with nothing of it merged
            shown = repr(uuid_list)
            record.update(success=False, error=f"MalformedResult: the wrapper reported success with uuid_list "
                                               f"a {type(uuid_list).__name__} "
                                               f"({shown if len(shown) <= 60 else shown[:57] + '...'}), "
                                               f"expected a list of the uuids of its EPC's parts")
        elif _is_uuid_collection(uuid_list):      # else none to merge: a failure, or no EPC
            record["uuid_list"] = [uuid_text(u) for u in uuid_list]
    except Exception as e:   # noqa: BLE001 - isolate every task failure
        last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        at = f" at {os.path.basename(last.filename)}:{last.lineno}" if last else ""
        record["error"] = f"{type(e).__name__}: {e}{at}"
        record["traceback"] = traceback.format_exc(limit=8)
        record["exception"] = pickled(e)
    record["seconds"] = round(time.perf_counter() - start, 4)
    return record


#: a task's exception larger than this when pickled travels as its text only
MAX_PICKLED_EXCEPTION = 1 << 20


def pickled(error: BaseException) -> bytes | None:
    """The exception as bytes for the caller of the Python API, so that it can see its original
    type; None when it cannot be pickled (or is huge). The record stays plain data either way: the
    client unpickles it only if it can (a class only the workers can import is no failure)."""
    try:
        blob = pickle.dumps(error)
    except Exception:   # noqa: BLE001 - unpicklable attributes, recursion...
        return None
    return blob if len(blob) <= MAX_PICKLED_EXCEPTION else None


def probe(shared_dir: str, token_file: str, token: str, inputs: list[str]) -> dict:
    """Run on a worker: can it read the client's token in the shared directory and see the inputs?"""
    try:
        with open(token_file) as f:
            seen = f.read().strip() == token
    except OSError:
        seen = False
    return {"worker": _where(), "host": socket.gethostname(), "token_seen": seen,
            "shared_writable": os.access(shared_dir, os.W_OK),
            "missing_inputs": [p for p in inputs if not os.path.exists(p)],
            "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS")}
