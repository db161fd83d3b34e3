"""What only SLURM has, on the real single-node SLURM (ci/slurm/start.sh): a batch longer than
the walltime completes; workers that never arrive, a bad partition and a node-local shared
directory end with clear messages. The end-to-end runs shared with SGE are in test_hpc_e2e.py."""
from __future__ import annotations

import sys
import textwrap

import pytest

from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp.errors import ExitCode

PROFILE = PROFILES["slurm"]
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]


def test_batch_longer_than_one_walltime_completes(slurm, hpc_workdir):
    """Walltime 1 min: workers retire after ~51 s (+-3 s) and new jobs replace them; the batch
    needs 120 s of work, more than the 2 first workers have in their lifetimes (2 x 51 s), so it
    only completes if the replacements take over. The tasks start once both first workers have
    taken one, so both live long enough to retire, however far apart their jobs start."""
    folder = hpc_workdir / "walltime"
    name = unique("resqmp-wall-")
    logs = folder / "logs"
    calls = folder / "calls"
    calls.mkdir(parents=True)
    batch = write_batch(folder / "batch.yaml", "wrappers_for_tests:logged_wrapper",
                        [{"seconds": 3.0, "name": f"s{i}"} for i in range(40)],
                        defaults={"log_dir": str(calls), "workers": 2})
    launch(PROFILE, batch, folder / "out.epc", "--set", "cluster.walltime=00:01:00",
           "--set", f"cluster.job_name={name}", "--set", f"cluster.log_directory={logs}",
           "--set", f"environment.PYTHONPATH={TESTS}", check=0, timeout=280)
    report = report_of(folder / "out.epc")
    assert all(t["success"] for t in report["tasks"]) and len(report["tasks"]) == 40
    jobs = sorted(logs.glob(f"{name}-*.err"))
    assert len(jobs) >= 3, jobs                          # the first 2 jobs were replaced
    texts = [j.read_text() for j in jobs]
    assert sum("worker-lifetime-reached" in t for t in texts) >= 2
    assert not any("DUE TO TIME LIMIT" in t for t in texts)   # retired, never killed by SLURM
    assert len({t["worker"] for t in report["tasks"]}) >= 3


def test_no_worker_arriving_reports_squeue_and_cancels_the_jobs(slurm, hpc_example, hpc_workdir):
    name = unique("resqmp-never-")
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "never.epc",
                  "--set", 'cluster.job_extra_directives=["--begin=now+1hour"]',
                  "--set", "scaling.worker_timeout=8", "--set", f"cluster.job_name={name}")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    message = proc.stderr
    assert "no worker arrived within 8 s" in message
    assert "PENDING" in message and "BeginTime" in message      # squeue's state and reason
    assert "jobs cancelled" in message
    assert wait_until(lambda: not scheduler_jobs("slurm", name), 120), sh("squeue").stdout


def test_rejected_submission_is_reported(slurm, hpc_example, hpc_workdir):
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "badpart.epc",
                  "--set", "cluster.queue=no-such-partition", "--set", "scaling.worker_timeout=8")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "sbatch failed" in proc.stderr and "invalid partition" in proc.stderr.lower(), proc.stderr


def test_node_local_task_directory_is_caught_when_the_first_worker_connects(slurm, hpc_example, hpc_workdir):
    """The classic failure: storage.shared_directory on storage the compute node does not share.
    Simulated on one node: the worker runs in its own mount namespace with an empty tmpfs over the
    task directory (as a node-local /tmp would be), while the TLS files stay visible."""
    hidden = hpc_workdir / "node-local"
    hidden.mkdir()
    profile = hpc_workdir / "nodelocal.yaml"
    profile.write_text(textwrap.dedent(f"""\
        extends: {PROFILE}
        cluster:
          shared_temp_directory: {SHARED}
          log_directory: {hpc_workdir}/logs
          python: "unshare --mount sh -c 'mount -t tmpfs tmpfs {hidden} && exec {sys.executable} \\"$@\\"' sh"
        scaling:
          workers: 1
        storage:
          shared_directory: {hidden}
        """))
    proc = launch(profile, hpc_example["batch"], hpc_workdir / "nodelocal.epc")
    assert proc.returncode == ExitCode.CLUSTER, proc.stdout + proc.stderr
    assert "cannot read a file the launcher wrote there" in proc.stderr, proc.stderr
    assert "not node-local /tmp" in proc.stderr
