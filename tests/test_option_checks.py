"""Option values checked before anything is provisioned (exit 4, one line naming the key and where
its value came from), and workers that die at start-up reported at once with their own error
(exit 7) instead of "no worker arrived" after scaling.worker_timeout (issue 10)."""
from __future__ import annotations


import pytest

from conftest import one_error_line, run_resqmp
from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp.errors import ExitCode


def launch_with(profile, work, tmp_path, *sets, timeout=300):
    args = [a for item in sets for a in ("--set", item)]
    return run_resqmp("launch", "--profile", profile, "--batch", work / "batch.yaml",
                      "--output", tmp_path / "o.epc", *args, timeout=timeout)


LOCAL_BAD = [
    ("cluster.memory_limit=banana", "cluster.memory_limit 'banana': expected a size such as 4GiB"),
    ("cluster.threads_per_worker=0", "cluster.threads_per_worker 0: expected an integer >= 1"),
    ("cluster.dashboard_address=127.0.0.1:99999", "cluster.dashboard_address '127.0.0.1:99999': expected HOST:PORT"),
    ("cluster.scheduler_port=70000", "cluster.scheduler_port 70000: expected a port from 0 to 65535"),
    ("cluster.interface=nope0", "cluster.interface 'nope0': expected a network interface of this host"),
]


@pytest.mark.parametrize("item, says", LOCAL_BAD, ids=[i.split("=")[0] for i, _ in LOCAL_BAD])
def test_local_option_values_are_refused_before_any_worker_starts(item, says, work, tmp_path):
    """`--set cluster.memory_limit=banana` used to start workers that crashed with tracebacks, and
    the launcher waited out scaling.worker_timeout to say "no worker arrived"."""
    proc = launch_with("local", work, tmp_path, item, "scaling.worker_timeout=20")
    line = one_error_line(proc, ExitCode.PROFILE)
    assert line.startswith(f"resqmp: error: --set '{item}': {says}"), line
    assert "cluster up" not in proc.stderr and not (tmp_path / "o.epc").exists()


JOBQUEUE_BAD = [
    ("cluster.memory=banana", "cluster.memory 'banana': expected a size such as 4GiB"),
    ("cluster.cores=0", "cluster.cores 0: expected an integer >= 1"),
    ("cluster.processes=3", "cluster.processes 3: expected at most cluster.cores (1)"),
    ("cluster.death_timeout=soonish", "cluster.death_timeout 'soonish': expected seconds"),
    ("cluster.scheduler_options={port: 99999}", "cluster.scheduler_options.port 99999: expected a port"),
    ("cluster.interface=nope0", "cluster.interface 'nope0': expected a network interface of this host"),
]


@pytest.mark.parametrize("item, says", JOBQUEUE_BAD, ids=[i.split("=")[0] for i, _ in JOBQUEUE_BAD])
def test_batch_scheduler_option_values_are_refused_before_any_job_is_submitted(item, says, work, tmp_path):
    """No scheduler is needed: nothing may reach sbatch."""
    proc = launch_with("slurm", work, tmp_path, item, f"storage.shared_directory={tmp_path}/shared",
                       "scaling.worker_timeout=20")
    line = one_error_line(proc, ExitCode.PROFILE)
    assert line.startswith(f"resqmp: error: --set '{item}': {says}"), line
    assert not (tmp_path / "shared").exists()
    proc = run_resqmp("profiles", "render", "slurm", "--set", item)
    assert proc.returncode == ExitCode.PROFILE and says in proc.stderr, proc.stderr


def test_a_value_from_a_profile_file_names_the_file(work, tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("extends: local\ncluster:\n  memory_limit: 4 bananas\n")
    line = one_error_line(launch_with(profile, work, tmp_path), ExitCode.PROFILE)
    assert line.startswith(f"resqmp: error: profile {profile}: cluster.memory_limit '4 bananas'"), line
    proc = run_resqmp("profiles", "validate", profile)
    assert proc.returncode == ExitCode.PROFILE and "cluster.memory_limit" in proc.stderr


def test_a_local_worker_that_dies_at_start_is_reported_with_its_own_error(work, tmp_path):
    """The worker process starts and fails (a preload module that is not installed): its error,
    at once, not "no worker arrived within 60 s"; no traceback from the nannies."""
    proc = launch_with("local", work, tmp_path, 'cluster.preload=["no_such_module_xyz"]', "scaling.worker_timeout=60")
    line = one_error_line(proc, ExitCode.CLUSTER)
    assert line == "resqmp: error: a local worker did not start: ModuleNotFoundError: No module named " \
                   "'no_such_module_xyz'", line
    assert not (tmp_path / "o.epc").exists()


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_worker_jobs_that_die_at_start_are_reported_with_their_output(slurm, hpc_example, hpc_workdir):
    """Both jobs start and their workers fail (preload not installed): as soon as SLURM says the
    jobs ended, the launcher stops waiting and shows the jobs' own words."""
    name = unique("resqmp-dies-")
    proc = launch(PROFILES["slurm"], hpc_example["batch"], hpc_workdir / f"{name}.epc",
                  "--set", 'cluster.worker_extra_args=["--preload", "no_such_module_xyz"]',
                  "--set", f"cluster.job_name={name}", "--set", "scaling.worker_timeout=100")
    line = one_error_line(proc, ExitCode.CLUSTER)
    assert "every worker job ended before a worker connected" in line
    assert "No module named 'no_such_module_xyz'" in line and "jobs cancelled" in line
    assert "no worker arrived" not in line
    assert wait_until(lambda: not scheduler_jobs("slurm", name), 30)
