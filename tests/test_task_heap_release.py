"""Where resqmp.allocator's task heap policy applies: tasks run with tasks.timeout get it too.

Page faults as the kernel counts them: no timings."""
from __future__ import annotations

import json

import pytest
from distributed import Client, LocalCluster

from resqmp.execute import run_on_client
from wrappers_for_tests import malloc_wrapper

ROUNDS_PAGES = 40 * (1 << 20) // 4096     # churn_faults' cost when each free unmaps its array


def _run(client, tmp_path, tasks: dict[int, dict], **options) -> list[dict]:
    records: list[dict] = []
    run_on_client(client, options.pop("function"), tasks, str(tmp_path), records.append, **options)
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

