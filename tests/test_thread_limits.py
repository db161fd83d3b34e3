"""On a cluster resqmp did not start (the drop-in with the user's own LocalCluster), each task runs
with one numba thread and one BLAS thread, unless the worker's environment chose otherwise
(resqmp.thread_limits)."""
from __future__ import annotations

import json
import os

import dask
import pytest
from distributed import LocalCluster

from resqmp.api import function_multiprocessing
from wrappers_for_tests import numba_threads_wrapper

CORES = os.cpu_count() or 1
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture
def plain_environment(monkeypatch):
    """The user's script: none of the thread variables set, so the workers inherit none."""
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _run(tmp_path, cluster, tasks: int = 3) -> list[dict]:
    kwargs = [{"record_file": str(tmp_path / f"rec{i}.json")} for i in range(tasks)]
    assert function_multiprocessing(numba_threads_wrapper, kwargs, tmp_path / "out.epc", cluster=cluster,
                                    tmp_dir_path=tmp_path) == [True] * tasks
    return [json.loads((tmp_path / f"rec{i}.json").read_text()) for i in range(tasks)]


def test_users_plain_local_cluster_runs_each_task_on_one_numba_thread(tmp_path, plain_environment):
    assert CORES > 1, "numba's default pool must be larger than one thread for this test to mean anything"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        records = _run(tmp_path, cluster)
    for r in records:
        assert r["env"] is None
        assert r["config"] == CORES             # the worker's numba pool: one thread per core...
        assert r["get_num_threads"] == 1        # ...of which the task uses one


def test_blas_pools_limited_when_the_workers_environment_does_not_say(tmp_path, plain_environment):
    # Dask's nannies set OMP/MKL/OpenBLAS to 1 themselves; a site's workers may not (no nanny, or
    # this setting emptied): then the task limits the pools itself
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            records = _run(tmp_path, cluster, tasks=2)
    for r in records:
        assert r["blas_threads"], "numpy's BLAS is loaded in the worker"
        assert set(r["blas_threads"]) == {1}


def test_a_thread_count_in_the_workers_environment_wins(tmp_path, plain_environment, monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            records = _run(tmp_path, cluster, tasks=2)
    for r in records:
        assert r["env"] == "2"
        assert r["get_num_threads"] == 2
        assert 2 in r["blas_threads"]


def test_tasks_run_in_the_callers_process_leave_its_threads_alone(tmp_path, plain_environment):
    import numba
    before = numba.get_num_threads()
    assert before > 1
    _run(tmp_path, None, tasks=1)
    assert numba.get_num_threads() == before
    assert not any(name in os.environ for name in THREAD_VARIABLES)
