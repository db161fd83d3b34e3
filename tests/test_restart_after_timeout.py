"""The worker of a timed-out task is killed (its nanny starts a fresh one) even when the
scheduler cannot say what that worker holds: asking first is only a courtesy (so a fetched
result is not recomputed), never a condition of the kill, or a hung task's thread would keep a
worker of the user's cluster forever."""
from __future__ import annotations

import time

from distributed import Client, LocalCluster

from resqmp.execute import _restart


def test_the_worker_is_restarted_even_when_the_scheduler_cannot_say_what_it_holds():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(1)
        (worker,) = client.scheduler_info()["workers"]

        async def unavailable(**kwargs):            # the scheduler's comm fails on this request
            raise OSError("connection closed")

        client.scheduler.has_what = unavailable
        _restart(client, worker, "resqmp-test")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = set(client.scheduler_info()["workers"])
            if now and worker not in now:
                break
            time.sleep(0.2)
        assert worker not in client.scheduler_info()["workers"], "the worker was never restarted"
