"""End to end through a real single-node SLURM (ci/slurm/start.sh), TLS on: `resqmp launch` with
ci/profiles/slurm-ci.yaml and 2 worker jobs gives the model a local run gives; the worker
environment is set before Python starts; a batch longer than the walltime completes; workers that
never arrive, a bad partition and a node-local shared directory end with clear messages."""
from __future__ import annotations

import sys
import textwrap
import time
import uuid

import pytest

from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp.errors import ExitCode

PROFILE = REPO / "ci" / "profiles" / "slurm-ci.yaml"
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_launch_with_two_worker_jobs_matches_a_local_run(slurm, hpc_example, hpc_workdir, local_reference):
    """Both worker jobs join over TLS and take tasks; the recombined model equals the local run's."""
    out = hpc_workdir / "slurm" / "faults.epc"
    out.parent.mkdir()
    name = unique("resqmp-e2e")
    before = tls_dirs()
    t0 = time.monotonic()
    proc = launch(PROFILE, slow_batch(hpc_example, "slurm"), out, "--set", f"cluster.job_name={name}",
                  "--set", f"environment.PYTHONPATH={TESTS}", check=0)
    elapsed = time.monotonic() - t0
    report = report_of(out)
    assert report["backend"] == "slurm" and report["exit_code"] == 0
    assert [t["success"] for t in report["tasks"]] == [True] * 4
    workers = {t["worker"] for t in report["tasks"]}
    assert len(workers) == 2 and all(w.startswith("tls://") for w in workers), workers
    jobs = registered_worker_jobs("slurm", name)                  # from the worker jobs' own logs
    assert len(jobs) == 2 and all(a.startswith("tls://") for a in jobs.values()), jobs
    assert_same_model(out, local_reference)
    # worker jobs cancelled/ended with the cluster, TLS files removed
    assert wait_until(lambda: not scheduler_jobs("slurm", name), 30), sh("squeue" if "slurm" == "slurm" else "qstat").stdout
    assert tls_dirs() <= before
    assert elapsed < 120, proc.stderr


def test_plain_profile_command_works(slurm, hpc_example, hpc_workdir, local_reference):
    """Exactly the command from the README: no --set."""
    out = hpc_workdir / "slurm-plain" / "faults.epc"
    out.parent.mkdir()
    launch(PROFILE, hpc_example["batch"], out, check=0)
    assert_same_model(out, local_reference)


def test_worker_environment_is_set_before_python_starts(slurm, hpc_workdir):
    folder = hpc_workdir / "env-slurm"
    batch = write_batch(folder / "batch.yaml", "wrappers_for_tests:numba_threads_wrapper",
                        [{"record_file": f"record-{i}.json", "name": f"r{i}"} for i in range(2)])
    launch(PROFILE, batch, folder / "out.epc", "--set", f"environment.PYTHONPATH={TESTS}", check=0)
    import json
    for i in range(2):
        seen = json.loads((folder / f"record-{i}.json").read_text())
        assert seen["env"] == "1" and seen["config"] == 1 and seen["get_num_threads"] == 1, seen
        assert seen["cache"] == "true" and seen["hdf5_locking"] == "FALSE"


def test_batch_longer_than_one_walltime_completes(slurm, hpc_workdir):
    """Walltime 1 min: workers retire after ~51 s (+-3 s) and new jobs replace them; the batch
    needs ~60 s of work on 2 workers, so it only completes if the replacements take over."""
    folder = hpc_workdir / "walltime"
    name = unique("resqmp-wall")
    logs = folder / "logs"
    batch = write_batch(folder / "batch.yaml", "wrappers_for_tests:sleepy_wrapper",
                        [{"seconds": 3.0, "name": f"s{i}"} for i in range(40)])
    t0 = time.monotonic()
    launch(PROFILE, batch, folder / "out.epc", "--set", "cluster.walltime=00:01:00",
           "--set", f"cluster.job_name={name}", "--set", f"cluster.log_directory={logs}",
           "--set", f"environment.PYTHONPATH={TESTS}", check=0, timeout=280)
    elapsed = time.monotonic() - t0
    report = report_of(folder / "out.epc")
    assert all(t["success"] for t in report["tasks"]) and len(report["tasks"]) == 40
    assert elapsed > 60, elapsed                         # longer than one walltime
    jobs = sorted(logs.glob(f"{name}-*.err"))
    assert len(jobs) >= 3, jobs                          # the first 2 jobs were replaced
    texts = [j.read_text() for j in jobs]
    assert sum("worker-lifetime-reached" in t for t in texts) >= 2
    assert not any("DUE TO TIME LIMIT" in t for t in texts)   # retired, never killed by SLURM
    assert len({t["worker"] for t in report["tasks"]}) >= 3


def test_no_worker_arriving_reports_squeue_and_cancels_the_jobs(slurm, hpc_example, hpc_workdir):
    name = unique("resqmp-never")
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "never.epc",
                  "--set", 'cluster.job_extra_directives=["--begin=now+1hour"]',
                  "--set", "scaling.worker_timeout=8", "--set", f"cluster.job_name={name}")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    message = proc.stderr
    assert "no worker arrived within 8 s" in message
    assert "PENDING" in message and "BeginTime" in message      # squeue's state and reason
    assert "jobs cancelled" in message
    assert wait_until(lambda: not scheduler_jobs("slurm", name), 20), sh("squeue").stdout


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


def test_launcher_job_runs_resqmp_launch_as_a_batch_job(slurm, hpc_example, hpc_workdir, local_reference):
    """hpc-templates/slurm/resqmp-launch.sbatch: the client itself is a SLURM job; it submits the
    worker job (1 CPU each on the 2-CPU node)."""
    out = hpc_workdir / "launcher" / "faults.epc"
    out.parent.mkdir()
    script = REPO / "hpc-templates" / "slurm" / "resqmp-launch.sbatch"
    proc = sh("sbatch", "--parsable", "-o", out.parent / "launcher-%j.out", "--chdir", out.parent, script,
              hpc_example["batch"], out, "--workers", "1",
              env={"RESQMP": str(BIN / "resqmp"), "RESQMP_PROFILE": str(PROFILE)}, check=True)
    job = proc.stdout.strip().split(";")[0]
    assert wait_until(lambda: not sh("squeue", "-h", "-j", job).stdout.strip(), 150, interval=1)
    log = (out.parent / f"launcher-{job}.out").read_text()
    assert "4 succeeded, 0 failed" in log, log
    assert_same_model(out, local_reference)


def test_worker_job_that_dies_at_start_shows_its_output(slurm, hpc_example, hpc_workdir):
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "nopython-slurm.epc",
                  "--set", "cluster.python=/nonexistent/python", "--set", "scaling.worker_timeout=10")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "no worker arrived" in proc.stderr
    assert "/nonexistent/python: No such file or directory" in proc.stderr, proc.stderr
