"""End to end through each real single-node scheduler (ci/slurm/start.sh, ci/sge/start.sh), TLS on:
`resqmp launch` with ci/profiles/<scheduler>-ci.yaml and 2 worker jobs gives the model a local run
gives; the worker environment is set before Python starts (SGE passes no environment by default);
the launcher template runs `resqmp launch` as a batch job; a worker job that cannot start shows its
output. What only one scheduler has lives in test_hpc_slurm.py and test_hpc_sge.py."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp.errors import ExitCode

pytestmark = pytest.mark.timeout(300)


def _submit_sbatch(script: Path, folder: Path, args: list) -> tuple[str, Path]:
    proc = sh("sbatch", "--parsable", "-o", folder / "launcher-%j.out", "--chdir", folder, script, *args,
              env={"RESQMP": str(BIN / "resqmp"), "RESQMP_PROFILE": str(PROFILES["slurm"])},
              check=True)
    job = proc.stdout.strip().split(";")[0]
    return job, folder / f"launcher-{job}.out"


def _submit_qsub(script: Path, folder: Path, args: list) -> tuple[str, Path]:
    log = folder / "launcher.out"
    proc = sh("qsub", "-terse", "-wd", folder, "-o", log,
              "-v", f"RESQMP={BIN / 'resqmp'},RESQMP_PROFILE={PROFILES['sge']}", script, *args,
              check=True)
    return proc.stdout.strip(), log


@dataclass(frozen=True)
class Scheduler:
    name: str
    profile: Path
    launcher_script: Path
    submit: Callable[[Path, Path, list], tuple[str, Path]]
    job_gone: Callable[[str], bool]
    listing: tuple[str, ...]                  # the command that shows every job, for failure messages


SCHEDULERS = {
    "slurm": Scheduler("slurm", PROFILES["slurm"],
                       REPO / "hpc-templates" / "slurm" / "resqmp-launch.sbatch", _submit_sbatch,
                       lambda job: not sh("squeue", "-h", "-j", job).stdout.strip(), ("squeue",)),
    "sge": Scheduler("sge", PROFILES["sge"],
                     REPO / "hpc-templates" / "sge" / "resqmp-launch.qsub", _submit_qsub,
                     lambda job: sh("qstat", "-j", job).returncode != 0, ("qstat", "-u", "*")),
}


@pytest.fixture(params=[pytest.param("slurm", marks=pytest.mark.slurm),
                        pytest.param("sge", marks=pytest.mark.sge)])
def scheduler(request) -> Scheduler:
    request.getfixturevalue(request.param)          # the session fixture that starts it
    return SCHEDULERS[request.param]


def test_launch_with_two_worker_jobs_matches_a_local_run(scheduler, hpc_example, hpc_workdir, local_reference):
    """Both worker jobs join over TLS and take tasks; the recombined model equals the local run's."""
    out = hpc_workdir / f"two-{scheduler.name}" / "faults.epc"
    out.parent.mkdir()
    name = unique()
    before = tls_dirs()
    # Each task waits until both worker jobs have taken one, however far apart they start (the
    # scheduler hands the second worker a queued task, or it steals one from the first).
    calls = out.parent / "calls"
    calls.mkdir()
    batch = slow_batch(hpc_example, f"slow-{scheduler.name}", log_dir=str(calls), workers=2)
    launch(scheduler.profile, batch, out, "--set", f"cluster.job_name={name}",
           "--set", f"environment.PYTHONPATH={TESTS}", check=0)
    report = report_of(out)
    assert report["backend"] == scheduler.name and report["exit_code"] == 0
    assert [t["success"] for t in report["tasks"]] == [True] * 4
    workers = {t["worker"] for t in report["tasks"]}
    assert len(workers) == 2 and all(w.startswith("tls://") for w in workers), workers
    jobs = registered_worker_jobs(scheduler.name, name)          # from the worker jobs' own logs
    assert len(jobs) == 2 and all(a.startswith("tls://") for a in jobs.values()), jobs
    assert_same_model(out, local_reference)
    # worker jobs cancelled/ended with the cluster, TLS files removed
    assert wait_until(lambda: not scheduler_jobs(scheduler.name, name), 120), sh(*scheduler.listing).stdout
    assert tls_dirs() <= before


def test_plain_profile_command_works(scheduler, hpc_example, hpc_workdir, local_reference):
    """Exactly the command from the README: no --set."""
    out = hpc_workdir / f"plain-{scheduler.name}" / "faults.epc"
    out.parent.mkdir()
    launch(scheduler.profile, hpc_example["batch"], out, check=0)
    assert_same_model(out, local_reference)


def test_worker_environment_is_set_before_python_starts(scheduler, hpc_workdir):
    folder = hpc_workdir / f"env-{scheduler.name}"
    batch = write_batch(folder / "batch.yaml", "wrappers_for_tests:numba_threads_wrapper",
                        [{"record_file": f"record-{i}.json", "name": f"r{i}"} for i in range(2)])
    launch(scheduler.profile, batch, folder / "out.epc", "--set", f"environment.PYTHONPATH={TESTS}", check=0)
    for i in range(2):
        seen = json.loads((folder / f"record-{i}.json").read_text())
        assert seen["env"] == "1" and seen["config"] == 1 and seen["get_num_threads"] == 1, seen
        assert seen["cache"] == "true" and seen["hdf5_locking"] == "FALSE"


def test_launcher_job_runs_resqmp_launch_as_a_batch_job(scheduler, hpc_example, hpc_workdir, local_reference):
    """hpc-templates/<scheduler>/resqmp-launch.*: the client itself is a batch job; it submits the
    worker job (one CPU each on the 2-CPU node)."""
    out = hpc_workdir / f"launcher-{scheduler.name}" / "faults.epc"
    out.parent.mkdir()
    job, log = scheduler.submit(scheduler.launcher_script, out.parent,
                                [hpc_example["batch"], out, "--workers", "1"])
    # a generous deadline (inside the test's 300 s timeout); the log then says how it went
    assert wait_until(lambda: scheduler.job_gone(job), 270, interval=1), sh(*scheduler.listing).stdout
    text = log.read_text()
    assert "4 succeeded, 0 failed" in text, text
    assert_same_model(out, local_reference)


def test_worker_job_that_dies_at_start_shows_its_output(scheduler, hpc_example, hpc_workdir):
    # Once the scheduler says every worker job ended without a worker, the launcher stops with the
    # jobs' output: it does not wait out the (long) worker timeout to say "no worker arrived".
    proc = launch(scheduler.profile, hpc_example["batch"], hpc_workdir / f"nopython-{scheduler.name}.epc",
                  "--set", "cluster.python=/nonexistent/python", "--set", "scaling.worker_timeout=300")
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    assert "every worker job ended before a worker connected" in proc.stderr, proc.stderr
    assert "no worker arrived" not in proc.stderr
    assert "/nonexistent/python: No such file or directory" in proc.stderr, proc.stderr
