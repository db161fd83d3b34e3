"""Folders and names that go into a job script's directives (`#SBATCH -o DIR/...`, `#$ -e DIR/`,
`#$ -wd DIR`, `#PBS -o`, `#BSUB -o`, the job name).

dask-jobqueue writes them into the directive line as they are. A scheduler reads a directive line
by its own rules, not the shell's. Measured with the real parsers (sbatch 22.05 with -vvv, qsub
8.1.9 with -verify: both parse the script and print what they read before they need a
controller): an unquoted space ends the value (sbatch: "Invalid directive found in batch script",
qsub: "Unknown option"), an unquoted `#` ends it silently (the logs go to another folder), and
both read a double-quoted value as one, spaces included (sbatch also `#`). resqmp therefore
quotes the log folders (and SGE's -wd) it writes for SLURM and SGE, and refuses, when the profile
is checked, a folder or name holding a character a scheduler still reads its own way (quotes,
SLURM's and LSF's `%j`/`%J` patterns, Grid Engine's `#`, `host:path`, `$JOB_ID` and path lists;
for PBS and LSF, which cannot be tried here, also spaces): one line naming the setting
(storage.shared_directory when the logs go to its default folder) and why."""
from __future__ import annotations

import re

import pytest

from conftest import one_error_line, run_resqmp
from scheduler_parsers import needs_qsub, needs_sbatch, qsub_reads, sbatch_reads
from resqmp import profiles
from resqmp.backends import for_profile
from resqmp.errors import ExitCode, ProfileError
from resqmp.worker_env import worker_environment

SCHEDULERS = ("slurm", "sge", "pbs", "lsf")
PREFIX = {"slurm": "#SBATCH", "sge": "#$", "pbs": "#PBS", "lsf": "#BSUB"}


def render(backend: str, *sets: str) -> str:
    p = profiles.load(backend, list(sets))
    return for_profile(p, worker_environment(p)).render()


def refusal(backend: str, *sets: str) -> str:
    with pytest.raises(ProfileError) as e:
        render(backend, *sets)
    return str(e.value)


# characters each scheduler reads specially in a log path or directive value
BAD = {
    "slurm": {"100%j": "%", 'say"hi': '"', "it's": "'", "back\\slash": "\\"},
    "sge": {"a#b": "#", "host:path": ":", "a,b": ",", "cost$": "$", 'say"hi': '"'},
    "pbs": {"my dir": "a space", "a#b": "#", "host:path": ":", 'say"hi': '"'},
    "lsf": {"my dir": "a space", "a#b": "#", "100%J": "%", 'say"hi': '"'},
}
CASES = [(b, name, what) for b, names in BAD.items() for name, what in names.items()]
# one of them per scheduler, for the tests that need one
ONE_BAD = {b: next(iter(names.items())) for b, names in BAD.items()}


@pytest.mark.parametrize("backend,name,what", CASES, ids=[f"{b}-{n}" for b, n, _ in CASES])
def test_a_log_directory_the_directive_cannot_carry_is_refused(backend, name, what, tmp_path):
    logs = tmp_path / name / "logs"
    line = refusal(backend, f"storage.shared_directory={tmp_path}", f"cluster.log_directory={logs}")
    assert line.startswith("--set 'cluster.log_directory=") and \
        f"cluster.log_directory {str(logs)!r}: holds {what}," in line, line
    assert PREFIX[backend] in line and "\n" not in line


@pytest.mark.parametrize("backend", SCHEDULERS)
def test_the_default_log_folder_names_the_shared_directory(backend, tmp_path):
    """No log_directory: the logs go to storage.shared_directory/logs; the shared directory is the
    setting to change, or log_directory to set."""
    name, what = ONE_BAD[backend]
    shared = tmp_path / name
    line = refusal(backend, f"storage.shared_directory={shared}")
    assert line.startswith("--set 'storage.shared_directory=") and \
        f"storage.shared_directory {str(shared)!r}: holds {what}," in line, line
    assert "cluster.log_directory" in line


@pytest.mark.parametrize("backend", SCHEDULERS)
def test_a_job_name_the_directive_cannot_carry_is_refused(backend, tmp_path):
    line = refusal(backend, f"storage.shared_directory={tmp_path}", "cluster.job_name=my workers")
    assert line.startswith("--set 'cluster.job_name=my workers': cluster.job_name 'my workers': holds a space"), line


def test_sge_working_directory_is_a_directive_too(tmp_path):
    """SGE jobs start in the shared directory (`#$ -wd DIR`, resqmp's): a `,` there is refused even
    with the logs elsewhere; with the site's own -wd, the shared directory is in no directive."""
    shared = tmp_path / "a,b"
    logs = f"cluster.log_directory={tmp_path}/logs"
    line = refusal("sge", f"storage.shared_directory={shared}", logs)
    assert line.startswith("--set 'storage.shared_directory=") and \
        f"storage.shared_directory {str(shared)!r}: holds ," in line and "-wd" in line, line
    script = render("sge", f"storage.shared_directory={shared}", logs, 'cluster.job_extra_directives=["-wd /site/wd"]')
    assert "#$ -wd /site/wd" in script.splitlines()


@pytest.mark.parametrize("backend", SCHEDULERS)
def test_ordinary_folder_names_reach_the_directives_as_written(backend, tmp_path):
    shared = tmp_path / "proj-1_v2.0+x@y=z"
    script = render(backend, f"storage.shared_directory={shared}", "cluster.job_name=resqmp-w.1")
    directives = [ln for ln in script.splitlines() if ln.startswith(PREFIX[backend] + " ")]
    assert f"{PREFIX[backend]} -e {shared}/logs/" in "\n".join(directives), script


def test_on_the_command_line_one_line_and_exit_4(tmp_path):
    proc = run_resqmp("profiles", "render", "pbs", "--set", f"storage.shared_directory={tmp_path}/my dir")
    line = one_error_line(proc, ExitCode.PROFILE)
    assert "storage.shared_directory" in line and "holds a space" in line, line


# --------------------------------------------------------------------------- what sbatch and qsub read

@needs_sbatch
def test_sbatch_reads_the_log_folder_resqmp_writes(tmp_path):
    shared = tmp_path / "my shared dir#1"
    seen = sbatch_reads(render("slurm", f"storage.shared_directory={shared}"), tmp_path)
    assert seen["error"] == f"{shared}/logs/resqmp-worker-%J.err", seen
    assert seen["output"] == f"{shared}/logs/resqmp-worker-%J.out", seen


@needs_sbatch
def test_sbatch_cuts_an_unquoted_log_folder(tmp_path):
    """Why the quotes: as dask-jobqueue alone writes the directives."""
    assert "refused" in sbatch_reads(f"#!/bin/bash\n#SBATCH -e {tmp_path}/my dir/x.err\ntrue\n", tmp_path)
    seen = sbatch_reads(f"#!/bin/bash\n#SBATCH -e {tmp_path}/a#b/x.err\ntrue\n", tmp_path)
    assert seen["error"] == f"{tmp_path}/a", seen          # silently another file


@needs_qsub
def test_qsub_reads_the_log_folder_and_working_directory_resqmp_writes(tmp_path):
    shared = tmp_path / "my shared dir"
    seen = qsub_reads(render("sge", f"storage.shared_directory={shared}"), tmp_path)
    assert re.search(rf"^stderr_path_list:\s+NONE:NONE:{re.escape(str(shared))}/logs/$", seen, re.M), seen
    assert re.search(rf"^stdout_path_list:\s+NONE:NONE:{re.escape(str(shared))}/logs/$", seen, re.M), seen
    assert re.search(rf"^cwd:\s+{re.escape(str(shared))}$", seen, re.M), seen


@needs_qsub
def test_qsub_cuts_an_unquoted_log_folder_and_a_hash_even_quoted(tmp_path):
    assert "Unknown option" in qsub_reads(f"#!/bin/bash\n#$ -e {tmp_path}/my dir/\ntrue\n", tmp_path)
    seen = qsub_reads(f'#!/bin/bash\n#$ -e "{tmp_path}/a#b/"\ntrue\n', tmp_path)
    assert re.search(rf"^stderr_path_list:\s+NONE:NONE:{re.escape(str(tmp_path))}/a$", seen, re.M), seen


# --------------------------------------------------------------------------- the running schedulers

@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_job_logs_go_to_a_folder_with_spaces(slurm, hpc_workdir):
    """A worker job start() submits (held: it takes no slot) with its logs in a folder with a
    space and a #: SLURM's StdErr/StdOut are in that folder."""
    from hpc_fixtures import PROFILES, sh, unique, wait_until
    from test_walltime import _submitted_job
    name = unique("dp-")
    logs = hpc_workdir / f"{name} logs#1"
    p = profiles.load(str(PROFILES["slurm"]), ['cluster.job_extra_directives=["--hold"]', f"cluster.job_name={name}",
                                               f"cluster.log_directory={logs}"])
    cluster = for_profile(p, worker_environment(p)).start()
    try:
        job = _submitted_job(cluster)
        # one field per line here (`scontrol show job -o` splits a path with a space)
        info = wait_until(lambda: sh("scontrol", "show", "job", job).stdout, 30)
    finally:
        cluster.close()
    fields = dict(ln.strip().split("=", 1) for ln in info.splitlines() if ln.strip().startswith(("StdErr=", "StdOut=")))
    # a pending job shows the pattern; SLURM expands %J when it writes the file
    assert fields["StdErr"] in (f"{logs}/{name}-%J.err", f"{logs}/{name}-{job}.err"), info
    assert fields["StdOut"] in (f"{logs}/{name}-%J.out", f"{logs}/{name}-{job}.out"), info


@pytest.mark.sge
@pytest.mark.timeout(300)
def test_sge_job_logs_and_start_directory_in_folders_with_spaces(sge, hpc_workdir):
    from hpc_fixtures import PROFILES, SGE_ENV, sh, unique
    from test_walltime import _submitted_job
    name = unique("dp")
    shared = hpc_workdir / f"{name} shared"
    shared.mkdir()
    p = profiles.load(str(PROFILES["sge"]), ['cluster.job_extra_directives=["-h"]', f"cluster.job_name={name}",
                                             f"storage.shared_directory={shared}", "cluster.log_directory=null"])
    cluster = for_profile(p, worker_environment(p)).start()
    try:
        info = sh("qstat", "-j", _submitted_job(cluster), env=SGE_ENV).stdout
    finally:
        cluster.close()
    assert re.search(rf"^stderr_path_list:\s+NONE:NONE:{re.escape(str(shared))}/logs/$", info, re.M), info
    assert re.search(rf"^cwd:\s+{re.escape(str(shared))}$", info, re.M), info
