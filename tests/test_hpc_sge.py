"""End to end through a real single-node Son of Grid Engine (ci/sge/start.sh), TLS on: `resqmp
launch` with ci/profiles/sge-ci.yaml and 2 worker jobs gives the model a local run gives; the worker
environment is set before Python starts (SGE passes no environment by default); held jobs and an
unknown queue end with the scheduler's view; the launcher template runs as an SGE job."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp.errors import ExitCode

PROFILE = REPO / "ci" / "profiles" / "sge-ci.yaml"
pytestmark = [pytest.mark.sge, pytest.mark.timeout(300)]


def unique() -> str:
    return f"q{uuid.uuid4().hex[:8]}"          # qstat shows 10 characters of a job name


def test_launch_with_two_worker_jobs_matches_a_local_run(sge, hpc_example, hpc_workdir, local_reference):
    """Both worker jobs join over TLS and take tasks; the recombined model equals the local run's."""
    out = hpc_workdir / "sge" / "faults.epc"
    out.parent.mkdir()
    name = unique()
    before = tls_dirs()
    t0 = time.monotonic()
    proc = launch(PROFILE, slow_batch(hpc_example, "sge"), out, "--set", f"cluster.job_name={name}",
                  "--set", f"environment.PYTHONPATH={TESTS}", check=0)
    elapsed = time.monotonic() - t0
    report = report_of(out)
    assert report["backend"] == "sge" and report["exit_code"] == 0
    assert [t["success"] for t in report["tasks"]] == [True] * 4
    workers = {t["worker"] for t in report["tasks"]}
    assert len(workers) == 2 and all(w.startswith("tls://") for w in workers), workers
    jobs = registered_worker_jobs("sge", name)                  # from the worker jobs' own logs
    assert len(jobs) == 2 and all(a.startswith("tls://") for a in jobs.values()), jobs
    assert_same_model(out, local_reference)
    # worker jobs cancelled/ended with the cluster, TLS files removed
    assert wait_until(lambda: not scheduler_jobs("sge", name), 30), sh("squeue" if "sge" == "slurm" else "qstat").stdout
    assert tls_dirs() <= before
    assert elapsed < 120, proc.stderr


def test_plain_profile_command_works(sge, hpc_example, hpc_workdir, local_reference):
    """Exactly the command from the README: no --set."""
    out = hpc_workdir / "sge-plain" / "faults.epc"
    out.parent.mkdir()
    launch(PROFILE, hpc_example["batch"], out, check=0)
    assert_same_model(out, local_reference)


def test_worker_environment_is_set_before_python_starts(sge, hpc_workdir):
    folder = hpc_workdir / "env-sge"
    batch = write_batch(folder / "batch.yaml", "wrappers_for_tests:numba_threads_wrapper",
                        [{"record_file": f"record-{i}.json", "name": f"r{i}"} for i in range(2)])
    launch(PROFILE, batch, folder / "out.epc", "--set", f"environment.PYTHONPATH={TESTS}", check=0)
    for i in range(2):
        seen = json.loads((folder / f"record-{i}.json").read_text())
        assert seen["env"] == "1" and seen["config"] == 1 and seen["get_num_threads"] == 1, seen
        assert seen["cache"] == "true" and seen["hdf5_locking"] == "FALSE"


def test_held_jobs_report_qstat_and_are_deleted(sge, hpc_example, hpc_workdir):
    name = unique()
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "held.epc",
                  "--set", 'cluster.job_extra_directives=["-h"]', "--set", "scaling.worker_timeout=8",
                  "--set", f"cluster.job_name={name}")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "no worker arrived within 8 s" in proc.stderr
    assert "hqw" in proc.stderr and "hold" in proc.stderr           # qstat state and scheduling info
    assert "jobs cancelled" in proc.stderr
    assert wait_until(lambda: not scheduler_jobs("sge", name), 30), sh("qstat", "-u", "*").stdout


def test_rejected_submission_is_reported(sge, hpc_example, hpc_workdir):
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "badq.epc",
                  "--set", "cluster.queue=nosuch.q", "--set", "scaling.worker_timeout=8")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "qsub failed" in proc.stderr and 'unknown queue "nosuch.q"' in proc.stderr, proc.stderr


def test_launcher_job_runs_resqmp_launch_as_a_batch_job(sge, hpc_example, hpc_workdir, local_reference):
    out = hpc_workdir / "launcher-sge" / "faults.epc"
    out.parent.mkdir()
    script = REPO / "hpc-templates" / "sge" / "resqmp-launch.qsub"
    proc = sh("qsub", "-terse", "-wd", out.parent, "-o", out.parent / "launcher.out",
              "-v", f"RESQMP={BIN / 'resqmp'},RESQMP_PROFILE={PROFILE}", script,
              hpc_example["batch"], out, "--workers", "1", check=True)
    job = proc.stdout.strip()
    assert wait_until(lambda: sh("qstat", "-j", job).returncode != 0, 150, interval=1)
    log = (out.parent / "launcher.out").read_text()
    assert "4 succeeded, 0 failed" in log, log
    assert_same_model(out, local_reference)


def test_worker_job_that_dies_at_start_shows_its_output(sge, hpc_example, hpc_workdir):
    proc = launch(PROFILE, hpc_example["batch"], hpc_workdir / "nopython-sge.epc",
                  "--set", "cluster.python=/nonexistent/python", "--set", "scaling.worker_timeout=10")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "no worker arrived" in proc.stderr
    assert "/nonexistent/python: No such file or directory" in proc.stderr, proc.stderr
