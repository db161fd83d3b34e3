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
    ("cluster.memory=banana", "cluster.memory 'banana': expected a size with a unit such as 4GiB"),
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


# --------------------------------------------------------------------------- values dask-jobqueue parses

# Values dask-jobqueue turns into directives and the worker's memory limit: each refused on every
# scheduler with one line naming the key and the form expected, before a job script exists. A
# memory without a unit is bytes to Dask: `memory: 1` (meant as 1 GiB) made SLURMCluster fail
# with "not all arguments converted during string formatting" and gave SGE, PBS and LSF workers a
# limit of 1 byte.
SCHEDULER_BAD = [
    (b, item, says) for b in ("slurm", "sge", "pbs", "lsf") for item, says in [
        ("cluster.memory=1", "cluster.memory 1: expected a size with a unit such as 4GiB or 500MB"),
        ('cluster.memory="4"', "cluster.memory '4': expected a size with a unit such as 4GiB or 500MB"),
        ("cluster.memory=4.5", "cluster.memory 4.5: expected a size with a unit such as 4GiB or 500MB"),
        ("cluster.memory=500B", "cluster.memory '500B': expected at least 256MiB per worker process"),
        ("cluster.memory=1GiB", "cluster.memory '1GiB': expected at least 256MiB per worker process "
                                "(1GiB for 8 processes)"),
        ("cluster.nanny=maybe", "cluster.nanny 'maybe': expected true or false"),
    ]] + [
    ("slurm", "cluster.job_cpu=x", "cluster.job_cpu 'x': expected an integer >= 1"),
    ("slurm", "cluster.job_mem=lots", "cluster.job_mem 'lots': expected a SLURM --mem value"),
    ("lsf", "cluster.ncpus=x", "cluster.ncpus 'x': expected an integer >= 1"),
    ("lsf", "cluster.mem=4GB", "cluster.mem '4GB': expected a number of bytes"),
    ("lsf", "cluster.lsf_units=xx", "cluster.lsf_units 'xx': expected one of kb, mb, gb, tb, pb, eb, zb"),
    ("lsf", "cluster.use_stdin=maybe", "cluster.use_stdin 'maybe': expected true or false"),
]


@pytest.mark.parametrize("backend, item, says", SCHEDULER_BAD, ids=[f"{b}-{i}" for b, i, _ in SCHEDULER_BAD])
def test_values_dask_jobqueue_parses_are_refused_in_one_line(backend, item, says):
    from resqmp import profiles
    from resqmp.backends import for_profile
    from resqmp.errors import ProfileError
    from resqmp.worker_env import worker_environment
    sets = [item] + (["cluster.cores=8", "cluster.processes=8"] if "8 processes" in says else [])
    p = profiles.load(backend, sets)
    with pytest.raises(ProfileError) as e:
        for_profile(p, worker_environment(p)).render()
    assert str(e.value) == f"--set '{item}': {says}" or str(e.value).startswith(f"--set '{item}': {says}"), e.value


@pytest.mark.parametrize("backend", ["slurm", "lsf"])
def test_memory_without_a_unit_on_the_command_line(backend):
    proc = run_resqmp("profiles", "render", backend, "--set", "cluster.memory=1")
    line = one_error_line(proc, ExitCode.PROFILE)
    assert line == ("resqmp: error: --set 'cluster.memory=1': cluster.memory 1: expected a size with a unit "
                    "such as 4GiB or 500MB (a number alone is bytes)"), line


@pytest.mark.parametrize("backend", ["slurm", "sge", "pbs", "lsf"])
@pytest.mark.parametrize("memory", ["256MiB", "1.5GiB", "4 GB", "16GiB"])
def test_memory_with_a_unit_is_taken(backend, memory):
    from resqmp import profiles
    from resqmp.backends import for_profile
    from resqmp.worker_env import worker_environment
    p = profiles.load(backend, [f"cluster.memory={memory}"])
    assert "--memory-limit" in for_profile(p, worker_environment(p)).render()
