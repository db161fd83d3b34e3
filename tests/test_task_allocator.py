"""A task's large temporary arrays stay in the worker's heap for its next ones (resqmp.allocator).

Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-
environ), which also fixes glibc's mmap threshold at 128 KB: every array above that is mapped and
unmapped again, and its pages are faulted in and zeroed each time. On the benchmark's find-faces
tasks that was ~2000 page faults and 60 % more CPU per task than the same task outside Dask.
Page faults are counted by the kernel, so these tests read them rather than any timing."""
from __future__ import annotations

import json

import pytest
from distributed import LocalCluster

from resqmp.api import function_multiprocessing
from wrappers_for_tests import churn_faults, malloc_wrapper

ROUNDS_PAGES = 40 * (1 << 20) // 4096     # what churn_faults costs when each free unmaps its array


def _run(tmp_path, cluster, tasks: int = 2) -> list[dict]:
    kwargs = [{"record_file": str(tmp_path / f"rec{i}.json")} for i in range(tasks)]
    assert function_multiprocessing(malloc_wrapper, kwargs, tmp_path / "out.epc", cluster=cluster,
                                    tmp_dir_path=tmp_path) == [True] * tasks
    return [json.loads((tmp_path / f"rec{i}.json").read_text()) for i in range(tasks)]


@pytest.fixture
def users_cluster():
    """The user's plain LocalCluster, with Dask's own nanny settings."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


def test_dask_sets_the_trim_threshold_that_unmaps_every_large_array(users_cluster):
    # the premise: outside a task, on Dask's worker, each round unmaps and faults its MB again
    with _client(users_cluster) as client:
        faults = client.submit(churn_faults, pure=False).result()
        env = client.run(lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(env.values()) == {"65536"}
    assert faults > ROUNDS_PAGES // 2


def test_a_task_on_the_users_cluster_keeps_its_arrays_in_the_heap(tmp_path, users_cluster):
    for r in _run(tmp_path, users_cluster):
        assert r["trim_env"] == "65536"          # Dask's setting is there...
        assert r["faults"] < ROUNDS_PAGES // 10  # ...and does not apply while the task runs


def _given_back() -> bool:
    from resqmp import allocator
    return allocator._restore is None and allocator._running == 0


def test_the_workers_own_policy_comes_back_once_it_is_idle(tmp_path, users_cluster):
    from proc_watch import wait_for
    _run(tmp_path, users_cluster, tasks=1)
    with _client(users_cluster) as client:
        wait_for(lambda: all(client.run(_given_back).values()), timeout=30,
                 what="the worker to go back to Dask's policy")
        faults = client.submit(churn_faults, pure=False).result()
    assert faults > ROUNDS_PAGES // 2           # Dask's memory policy for the worker's own work again


def test_a_site_that_chose_its_own_threshold_keeps_it(tmp_path, monkeypatch):
    # a value the site wrote (not Dask's default) is a choice: left alone during the task too.
    # Exported, as a site's module file would (the nanny prefers the environment to its config)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4096")
    if True:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            records = _run(tmp_path, cluster, tasks=1)
    assert records[0]["trim_env"] == "4096"
    assert records[0]["faults"] > ROUNDS_PAGES // 2


def test_tasks_run_in_the_callers_process_leave_its_heap_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")   # read by glibc at start only: the
    records = _run(tmp_path, None, tasks=1)                  # caller's heap is untouched either way
    assert records[0]["trim_env"] == "65536"


def _client(cluster):
    from distributed import Client
    return Client(cluster)
