"""Worker jobs whose walltime ends early in a run (tests/test_hpc_slurm's batch longer than one
walltime, on a loaded machine): the first worker can be gone before the shared-directory check,
and a worker can join and leave between two of the cluster's updates.

On main the check probed no worker and ended the launch with 'internal error: IndexError', and
the unknown worker's removal raised KeyError in distributed's handler of the scheduler's worker
updates (logged with its traceback), which ended that handler: the cluster saw no worker join or
leave after it and replaced none ("0 of 2 planned workers joined")."""
from __future__ import annotations

import pytest
from distributed import Client, LocalCluster

from resqmp import preflight
from resqmp.errors import ClusterError


@pytest.fixture
def empty_cluster():
    with LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield cluster, client


def test_the_shared_directory_check_waits_for_a_worker_when_the_first_one_left(empty_cluster, tmp_path, monkeypatch):
    cluster, client = empty_cluster
    monkeypatch.setattr(preflight, "PLANNED_WORKERS_GRACE", 0.01)    # the planned ones did not come in time
    cluster.scale(1)                                                 # ... a replacement is on its way
    seen = preflight.check_workers_see(client, tmp_path, [], planned=2, timeout=120)
    assert seen["token_seen"] and seen["shared_writable"] and len(seen["hosts"]) == 1


def test_the_shared_directory_check_without_any_worker_is_a_cluster_error(empty_cluster, tmp_path):
    _, client = empty_cluster
    with pytest.raises(ClusterError, match="no worker connected within 1 s"):
        preflight.check_workers_see(client, tmp_path, [], planned=1, timeout=1)


def test_a_worker_removed_before_the_cluster_heard_of_it_keeps_the_cluster_watching(tmp_path):
    from resqmp import profiles
    from resqmp.backends import for_profile
    from resqmp.worker_env import worker_environment
    p = profiles.load("slurm", [f"storage.shared_directory={tmp_path}", f"cluster.log_directory={tmp_path / 'logs'}"])
    cluster = for_profile(p, worker_environment(p)).start()      # its scheduler; no job submitted
    async def updates():      # on the cluster's loop, as the scheduler's updates arrive
        cluster._update_worker_status("remove", "tls://192.0.2.2:34435")
        # and one it heard of is still handled as before
        cluster._update_worker_status("add", {"workers": {"tls://192.0.2.3:1": {"name": "x-0"}}})
        cluster._update_worker_status("remove", "tls://192.0.2.3:1")
        return cluster.scheduler_info["workers"]

    try:
        assert cluster.sync(updates) == {}
    finally:
        cluster.close()
