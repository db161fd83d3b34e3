"""What only Grid Engine has, on the real single-node SGE (ci/sge/start.sh): held jobs and an
unknown queue end with qstat's view and the jobs deleted. The end-to-end runs shared with SLURM are
in test_hpc_e2e.py."""
from __future__ import annotations


import pytest

from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp.errors import ExitCode

PROFILE = PROFILES["sge"]
pytestmark = [pytest.mark.sge, pytest.mark.timeout(300)]


def test_held_jobs_report_qstat_and_are_deleted(sge, hpc_example, hpc_workdir):
    name = unique()
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "held.epc",
                  "--set", 'cluster.job_extra_directives=["-h"]', "--set", "scaling.worker_timeout=8",
                  "--set", f"cluster.job_name={name}")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "no worker arrived within 8 s" in proc.stderr
    assert "hqw" in proc.stderr and "hold" in proc.stderr           # qstat state and scheduling info
    assert "jobs cancelled" in proc.stderr
    assert wait_until(lambda: not scheduler_jobs("sge", name), 120), sh("qstat", "-u", "*").stdout


def test_rejected_submission_is_reported(sge, hpc_example, hpc_workdir):
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "badq.epc",
                  "--set", "cluster.queue=nosuch.q", "--set", "scaling.worker_timeout=8")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "qsub failed" in proc.stderr and 'unknown queue "nosuch.q"' in proc.stderr, proc.stderr
