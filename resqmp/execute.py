"""Send tasks to a Dask client and hand back each final result as it arrives.

A task that raises comes back as a failed record (see tasks.run_task). A task whose worker died
is re-run by the scheduler up to `distributed.scheduler.allowed-failures` times, then reported
failed; a task that raised is re-run only when retry_on_error is set.
"""
from __future__ import annotations

from typing import Callable

from distributed import as_completed

from resqmp.tasks import run_task


def _lost(index: int, error: BaseException) -> dict:
    name = type(error).__name__
    text = "worker died while running it" if name == "KilledWorker" else str(error)
    return {"index": index, "success": False, "epc_file": None, "uuid_list": [], "worker": None,
            "seconds": None, "error": f"{name}: {text}"}


def run_on_client(client, function, kwargs_by_index: dict[int, dict], run_dir: str,
                  on_result: Callable[[dict], None], retries: int = 0, retry_on_error: bool = False,
                  timeout: float | None = None, key_prefix: str = "resqmp-task") -> None:
    attempts = {i: 1 for i in kwargs_by_index}

    def submit(i: int):
        fut = client.submit(run_task, function, kwargs_by_index[i], i, run_dir, timeout,
                            key=f"{key_prefix}-{i}-a{attempts[i]}", pure=False)
        fut.resqmp_index = i
        return fut

    # Submit in task order: with streaming recombination, early indexes finishing first lets the
    # merge proceed while later tasks still run.
    pending = as_completed([submit(i) for i in sorted(kwargs_by_index)], loop=client.loop)
    for fut in pending:
        i = fut.resqmp_index
        try:
            result = fut.result()
        except Exception as e:   # noqa: BLE001 - KilledWorker, CancelledError, communication errors
            result = _lost(i, e)
        fut.release()
        if result.get("timed_out"):
            _restart(client, result.get("worker"))
        if result.get("error") and retry_on_error and attempts[i] <= retries:
            attempts[i] += 1
            pending.add(submit(i))
            continue
        result["attempts"] = attempts[i]
        on_result(result)


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
