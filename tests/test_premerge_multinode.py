"""Group partials where `tasks.premerge: auto` makes them: workers on other hosts than the
launcher (the two-node SLURM of ci/slurm/start-multinode.sh). Each node's worker writes its group's
partial into the shared directory; the launcher, on the controller's host, merges the tasks'
shares from it; the model is the local run's."""
from __future__ import annotations

from pathlib import Path

import pytest

from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from test_hpc_multinode import PROFILE, host_of, mn_example, mn_workdir, run_options  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slurm_multinode, pytest.mark.timeout(300)]


def test_workers_on_other_hosts_send_group_partials(slurm_multinode, mn_example, mn_workdir, local_reference):
    folder = mn_workdir / "partials"
    folder.mkdir()
    name = unique("rqmn-part-")
    batch = slow_batch(mn_example, "partials", delay=1.0)
    out = folder / "faults.epc"
    launch(PROFILE, batch, out, *run_options(folder, name), "--set", "tasks.group_size=2", "--keep-task-files",
           env=MN_ENV, check=0, timeout=240)
    report = report_of(out)
    assert report["group_size"] == 2 and all(t["success"] for t in report["tasks"])
    assert {host_of(t["worker"]) for t in report["tasks"]} <= set(MN_NODES.values())
    partials = sorted((Path(report["task_directory"]) / "groups").glob("*.epc"))
    assert len(partials) == 2, partials                  # one per group of two, both made on a compute node
    assert_same_model(out, local_reference)
