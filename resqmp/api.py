"""Drop-in for resqpy.multi_processing.function_multiprocessing on the resqmp engine.

Same signature and return value. Differences that matter: a task that raises is reported as a
failure instead of losing every result (logged as a warning on the `resqmp` logger, its exception
kept in the returned list's `errors`); outputs merge while other tasks still run; the recombined
EPC appears atomically; `cluster` may be None (run in-process), a Dask cluster, or a Client; with
many tasks per worker, consecutive tasks share one Dask task (tasks.group_size `auto`).
"""
from __future__ import annotations

import logging
import pickle
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Union

from resqmp.execute import run_in_process, run_on_client
from resqmp.recombine import Recombiner
from resqmp.scheduler_check import check as check_scheduler
from resqmp.warm import warm_users_cluster

log = logging.getLogger("resqmp")


class TaskError(Exception):
    """A task's error when its own exception could not travel back from the worker (it could not
    be pickled there or rebuilt here), or when the wrapper returned success False without raising.
    Its text names the original exception type and message."""


class Successes(list):
    """resqpy's return value, a list of bools in task order (it compares equal to resqpy's), plus
    `errors`: task index -> the exception of each task that failed (its original type when it
    could travel back from the worker, else TaskError)."""

    def __init__(self, flags, errors: dict[int, BaseException]):
        super().__init__(flags)
        self.errors = errors


class TasksFailed(Exception):
    """require_success=True and some tasks failed: resqpy's message plus the failed task indexes;
    `errors` as Successes.errors, and raised from the first failed task's exception."""

    def __init__(self, errors: dict[int, BaseException]):
        self.errors = errors
        super().__init__(f"one or more multiprocessing instances failed (tasks {', '.join(map(str, sorted(errors)))})")


def _error_of(result: dict) -> BaseException:
    blob = result.get("exception")
    if blob:
        try:
            return pickle.loads(blob)
        except Exception:   # noqa: BLE001 - a class the workers have and this process has not...
            pass
    return TaskError(result.get("error") or "the wrapper returned success False")


def _errors(results: dict[int, dict]) -> dict[int, BaseException]:
    """Each failed task's exception, and one warning per failed task on the resqmp logger."""
    errors = {}
    for i in sorted(results):
        if not results[i]["success"]:
            log.warning("task %d failed: %s", i, results[i].get("error") or "the wrapper returned success False")
            errors[i] = _error_of(results[i])
    return errors


def function_multiprocessing(function: Callable,
                             kwargs_list: List[Dict[str, Any]],
                             recombined_epc: Union[Path, str],
                             cluster=None,
                             consolidate: bool = True,
                             require_success=False,
                             tmp_dir_path: Union[Path, str] = '.',
                             backend: str = 'dask',
                             clean_up: bool = True) -> List[bool]:
    """Call `function` once per kwargs dict on `cluster` and recombine into `recombined_epc`.

    Returns the success flag of each call, in kwargs_list order (a list; its `errors` attribute
    maps the index of each failed task to its exception). With require_success, raises
    TasksFailed (naming the failed tasks, from the first one's exception) and writes nothing.
    `backend` is accepted for compatibility; a non-None cluster always runs through Dask.
    """
    tmp_dir = Path(tmp_dir_path if tmp_dir_path is not None else '.') / f'tmp_{uuid.uuid4()}'
    tmp_dir.mkdir(parents=True)
    by_index = {}
    for i, kwargs in enumerate(kwargs_list):
        # resqpy adds these to the caller's dicts; keep that visible behaviour
        kwargs["index"] = i
        kwargs["parent_tmp_dir"] = str(tmp_dir)
        by_index[i] = {k: v for k, v in kwargs.items() if k not in ("index", "parent_tmp_dir")}

    results: dict[int, dict] = {}
    recombiner = None
    try:
        if not require_success:
            recombiner = Recombiner(recombined_epc, consolidate=consolidate, update_existing=True,
                                    task_directory=tmp_dir)

        def offer(i: int) -> None:
            recombiner.offer(i, results[i]["epc_file"], results[i]["uuid_list"], results[i].get("partial"))
            for j, why in recombiner.take_damaged().items():
                # left out of the model: that task's success is False, as for a task that failed
                results[j].update(success=False, error=f"DamagedOutput: {why}", exception=None)

        def on_result(result: dict) -> None:
            results[result["index"]] = result
            if recombiner is not None:
                offer(result["index"])

        if cluster is None:
            run_in_process(function, by_index, str(tmp_dir), on_result, keep_exceptions=True)
        else:
            from distributed import Client
            client = cluster if isinstance(cluster, Client) else Client(cluster, set_as_default=False)
            try:
                # a scheduler that cannot unpickle resqmp's tasks (no resqmp, or another one without
                # them): ClusterError before anything is sent; another version: a warning
                warning = check_scheduler(client)
                if warning:
                    log.warning("%s", warning)
                # a cluster the user started has a cold numba in every worker: fill and load the
                # cache before the batch (resqmp's own launch does the same, see warm.py)
                try:
                    warm_users_cluster(client, f"{function.__module__}:{getattr(function, '__name__', '')}")
                except Exception as e:   # noqa: BLE001 - an optimisation: the batch runs cold instead
                    log.warning("warming the workers' numba cache failed (%s: %s); tasks compile on "
                                "their first call instead", type(e).__name__, e)
                # short tasks go to Dask in groups when every task slot has many of them
                # (execute.auto_group_size); a cluster still starting counts as one slot
                run_on_client(client, function, by_index, str(tmp_dir), on_result, group_size="auto",
                              keep_exceptions=True, premerge="auto")
            finally:
                if client is not cluster:
                    client.close()

        errors = _errors(results)
        success_list = Successes([results[i]["success"] for i in range(len(kwargs_list))], errors)
        if require_success:
            # resqpy checks before recombining: nothing is written when a task failed
            if errors:
                raise TasksFailed(errors) from errors[min(errors)]
            recombiner = Recombiner(recombined_epc, consolidate=consolidate, update_existing=True,
                                    task_directory=tmp_dir)
            for i in range(len(kwargs_list)):
                offer(i)
            errors = _errors({i: r for i, r in results.items() if not r["success"]})
            if errors:          # a task's output found damaged while merging: nothing is written
                raise TasksFailed(errors) from errors[min(errors)]
        recombiner.publish()
        return success_list
    except BaseException:
        if recombiner is not None:
            recombiner.abort()
        raise
    finally:
        if clean_up:
            shutil.rmtree(tmp_dir, ignore_errors=True)
