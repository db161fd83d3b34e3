"""What resqmp.allocator's task heap policy leaves behind: tasks run with tasks.timeout get it too,
and a worker whose tasks have all ended holds no more memory than under Dask's own policy.

Memory is read as the worker's resident set (the kernel's count) once its tasks have ended, and
page faults as the kernel counts them: no timings."""
from __future__ import annotations

import json
import time

import pytest
from distributed import Client, LocalCluster

from resqmp.execute import run_on_client
from wrappers_for_tests import malloc_wrapper, maps_by_itself, working_set_wrapper

ROUNDS_PAGES = 40 * (1 << 20) // 4096     # churn_faults' cost when each free unmaps its array
WORKING_SET_MB = 40 * 4                   # working_set_wrapper's arrays, alive together


def _rss_mb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20


def _worker_rss(client) -> int:
    (rss,) = client.run(_rss_mb).values()
    return rss


def _idle_rss(client, before: int, limit: float = 30.0) -> int:
    """The worker's resident set once it has given back what its tasks kept (resqmp.allocator
    does that GIVE_BACK_AFTER seconds after its last task): read until it is back near `before`,
    or `limit` seconds have passed."""
    deadline = time.monotonic() + limit
    while (rss := _worker_rss(client)) - before >= WORKING_SET_MB // 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    return rss


def _run(client, tmp_path, tasks: dict[int, dict], **options) -> list[dict]:
    records: list[dict] = []
    run_on_client(client, working_set_wrapper if "function" not in options else options.pop("function"),
                  tasks, str(tmp_path), records.append, **options)
    assert all(r["success"] for r in records), records
    return records


@pytest.fixture
def users_cluster():
    """The user's plain LocalCluster, with Dask's own nanny settings (MALLOC_TRIM_THRESHOLD_=65536)."""
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        yield cluster


def test_a_task_with_a_timeout_keeps_its_arrays_in_the_heap_too(tmp_path, users_cluster):
    # with tasks.timeout the wrapper runs in a helper thread: Dask's worker must still be seen there
    with Client(users_cluster) as client:
        (address,) = client.scheduler_info()["workers"]
        (record,) = _run(client, tmp_path, {0: {"record_file": str(tmp_path / "rec.json")}},
                         function=malloc_wrapper, timeout=600)
    measured = json.loads((tmp_path / "rec.json").read_text())
    assert measured["trim_env"] == "65536"
    assert measured["faults"] < ROUNDS_PAGES // 10       # as without a timeout
    assert record["worker"] == address                   # the record names the worker, not host:pid


@pytest.mark.parametrize("keep", [False, True], ids=["all-freed", "a-buffer-outlives-the-task"])
def test_a_worker_whose_task_ended_holds_no_more_than_under_dasks_policy(tmp_path, users_cluster, keep):
    with Client(users_cluster) as client:
        _run(client, tmp_path, {0: {"arrays": 1, "mb": 1}})        # imports, numpy
        before = _worker_rss(client)
        _run(client, tmp_path, {1: {"keep": keep}})
        after = _idle_rss(client, before)
    # under Dask's policy each array is unmapped when freed: ~0 MB stay; with the thresholds only
    # set back (nothing trimmed) 55 MB and 160 MB stayed for good
    assert after - before < WORKING_SET_MB // 10


def test_the_arena_of_a_task_that_ended_first_is_given_back_too(tmp_path, users_cluster):
    # two task threads: the first ends while the other still runs (the heap policy stays), so its
    # arena is trimmed only once the other ends
    with Client(users_cluster) as client:
        _run(client, tmp_path, {0: {"arrays": 1, "mb": 1}, 1: {"arrays": 1, "mb": 1}})
        before = _worker_rss(client)
        _run(client, tmp_path, {2: {}, 3: {"arrays": 1, "mb": 1, "seconds": 3.0}})
        after = _idle_rss(client, before)
    assert after - before < WORKING_SET_MB // 10



def test_tasks_that_follow_each_other_reuse_what_the_heap_kept(users_cluster):
    # the give-back waits for an idle worker: the next task of a group or a queue finds the heap
    # as the last one left it (given back after every task, it faulted all its pages again)
    def two_tasks() -> int:
        import resource
        from resqmp.tasks import run_task
        kwargs = {"arrays": 40, "mb": 1}
        assert run_task(working_set_wrapper, kwargs, 0, "/tmp")["success"]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        assert run_task(working_set_wrapper, kwargs, 1, "/tmp")["success"]
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    with Client(users_cluster) as client:
        assert client.submit(two_tasks, pure=False).result() < ROUNDS_PAGES // 10


def test_a_site_that_set_the_mmap_threshold_keeps_it_after_tasks(tmp_path, monkeypatch):
    # Dask's trim threshold with the site's own mmap threshold (16 MB: an 8 MB malloc comes from
    # the heap), exported as a site's module file would: the nanny passes it on to the worker.
    # 8 MB is more than the task's 1 MB array could have left at the top of the heap, so the probe
    # asks glibc's threshold whatever the heap kept
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(16 << 20))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert client.submit(maps_by_itself, 8 << 20, pure=False).result() is False    # the premise
        _run(client, tmp_path, {0: {"arrays": 1, "mb": 1}})
        assert client.submit(maps_by_itself, 8 << 20, pure=False).result() is False    # not 128 KB now
