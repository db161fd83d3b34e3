"""A hostile and a careless user against the trust promises (issue 9; issue 12 part 3): each test
here failed on main before its fix. Real launches, real files, real job scripts."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_resqmp
from hpc_fixtures import SGE_ENV, sh, unique
from resqmp.errors import ExitCode
from test_bad_inputs import assert_one_line_error


def launch(batch, out, *extra, **kwargs):
    return run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, *extra, **kwargs)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused_before_work(proc, code, *fragments):
    assert "cluster up" not in proc.stderr, proc.stderr
    return assert_one_line_error(proc, code, *fragments)


# -- the journal is written in place: never through a link onto another file ---------------------

def _symlinked(journal: Path, precious: Path) -> None:
    journal.symlink_to(precious)


def _hard_linked(journal: Path, precious: Path) -> None:
    os.link(precious, journal)


@pytest.mark.parametrize("fresh", [False, True], ids=["resume", "fresh"])
@pytest.mark.parametrize("link", [_symlinked, _hard_linked], ids=["symlink", "hard-link"])
def test_a_journal_name_linked_to_another_file_never_writes_into_it(work, tmp_path, link, fresh):
    """OUT.journal.jsonl planted as a link to a file that is no input of the batch (another model,
    elsewhere): the journal is appended and truncated in place, so opening it through the link
    truncated that model (its bytes after the last newline; with --fresh all of it)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = elsewhere / "precious.epc"
    shutil.copy(work / "model.epc", precious)
    before = sha(precious)
    journal = work / "faults.journal.jsonl"
    link(journal, precious)
    proc = launch(work / "batch.yaml", work / "faults.epc", *(["--fresh"] if fresh else []))
    line = refused_before_work(proc, ExitCode.OUTPUT, str(journal))
    assert ("symbolic link" if link is _symlinked else "hard link") in line.replace(str(tmp_path), "")
    assert sha(precious) == before
    assert not (work / "faults.epc").exists()


# -- profile values written into job scripts: one line each -------------------------------------

def _profile(tmp_path: Path, extends: str, **sections) -> Path:
    import yaml
    path = tmp_path / f"{extends}-hostile.yaml"
    path.write_text(yaml.safe_dump({"extends": extends, **sections}, sort_keys=False))
    return path


#: a worker environment value whose lines, written as they are into a job script, are directives:
#: SGE's qsub reads `#$` lines anywhere in the script (measured: an exported value with a line
#: `#$ -N injected` renamed the job)
_DIRECTIVE = "x\n#$ -N injected\n#SBATCH --output=/tmp/injected\n${HOME}\n#PBS -N injected"
_DIRECTIVE_PREFIXES = ("#$", "#SBATCH", "#PBS", "#BSUB")


def _job_script(profile: Path) -> str:
    proc = run_resqmp("profiles", "render", profile)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _exported(script: str, name: str) -> str:
    """The value `name` has after the script's export lines, in sh (HOME=/home/u)."""
    exports = script[script.index("export "):script.rindex("\n", 0, script.index(" -m distributed"))]
    out = subprocess.run(["sh", "-c", f'{exports}\nprintf %s "${{{name}}}"'], env={"HOME": "/home/u"},
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.mark.parametrize("backend", ["sge", "slurm", "pbs", "lsf"])
def test_a_worker_environment_value_never_writes_a_directive_into_a_job_script(tmp_path, backend):
    """Line breaks stay text (the rule), but no line of the value may start a line of the script."""
    profile = _profile(tmp_path, backend, environment={"D": _DIRECTIVE})
    script = _job_script(profile)
    assert "injected" not in " ".join(line for line in script.splitlines() if line.startswith(_DIRECTIVE_PREFIXES))
    assert _exported(script, "D") == _DIRECTIVE.replace("${HOME}", "/home/u")


def test_a_worker_environment_value_never_renames_a_real_sge_job(tmp_path, sge):
    """Submitted held to the real SGE and looked at: the job keeps its name (run this test under
    `flock /tmp/resqmp-heavy.lock`, as every test on the real schedulers)."""
    profile = _profile(tmp_path, "sge", environment={"D": _DIRECTIVE},
                       cluster={"job_name": unique("hostile")})
    script = tmp_path / "job.sh"
    script.write_text(_job_script(profile))
    job = sh("qsub", "-h", "-terse", str(script), env=SGE_ENV, check=True).stdout.strip().splitlines()[-1]
    try:
        shown = sh("qstat", "-j", job, env=SGE_ENV, check=True).stdout
    finally:
        sh("qdel", job, env=SGE_ENV)
    name = re.search(r"^job_name:\s+(\S+)", shown, re.M).group(1)
    assert name.startswith("hostile"), shown


def test_a_nul_in_a_worker_environment_value_is_refused_before_any_work(work, tmp_path):
    """No environment can carry one: a local worker failed to start with an internal error."""
    profile = _profile(tmp_path, "local", environment={"D": "a\0b"})
    proc = run_resqmp("launch", "--profile", profile, "--batch", work / "batch.yaml",
                      "--output", work / "faults.epc")
    refused_before_work(proc, ExitCode.PROFILE, "environment D", "NUL")
    assert not (work / "faults.epc").exists() and not (work / "faults.journal.jsonl").exists()


@pytest.mark.parametrize("backend, key, value", [
    ("sge", "queue", "all.q\n#$ -N injected"),
    ("slurm", "job_name", "w\ntouch /tmp/injected"),
    ("pbs", "account", "a\ntouch /tmp/injected"),
    ("lsf", "job_extra_directives", ["-q x\ntouch /tmp/injected"]),
])
def test_a_line_break_in_a_job_script_option_is_refused(tmp_path, backend, key, value):
    """dask-jobqueue writes these into `#SBATCH`/`#$`/`#PBS`/`#BSUB` lines: a line break would make
    the rest a command of the job (run on the compute node) or a directive of its own."""
    profile = _profile(tmp_path, backend, cluster={key: value})
    proc = run_resqmp("profiles", "render", profile)
    assert_one_line_error(proc, ExitCode.PROFILE, str(profile), f"cluster.{key}", "line break")
    assert "injected" not in proc.stdout


# -- a journal names task files of this run only -------------------------------------------------

def test_a_journal_naming_a_file_outside_the_run_is_not_merged(work, tmp_path):
    """An edited journal (with the batch's digest, which anyone can compute) whose record names
    another model as a finished task's file: resuming merged that model into OUT. Such a record
    counts as not done (like one whose files are gone): the task runs again."""
    import json
    from test_data_safety import failing
    batch = failing(work, "failing.yaml")
    out = work / "faults.epc"
    assert launch(batch, out).returncode == ExitCode.TASKS_FAILED
    journal = work / "faults.journal.jsonl"
    lines = journal.read_text().splitlines()
    n = next(i for i, text in enumerate(lines[1:], 1) if json.loads(text)["success"])
    record = json.loads(lines[n])
    foreign = tmp_path / "elsewhere" / "other.epc"
    foreign.parent.mkdir()
    shutil.copy(work / "model.epc", foreign)
    shutil.copy(work / "model.h5", foreign.with_suffix(".h5"))
    record["epc_file"] = str(foreign)
    lines[n] = json.dumps(record)
    journal.write_text("\n".join(lines) + "\n")
    proc = launch(batch, out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert "resuming: 2 of 4" in proc.stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["tasks"][record["index"]]["resumed"] is False
    assert report["tasks"][record["index"]]["success"] is True


# -- a file at the journal's name that is no journal of ours is left as it is -----------------------

@pytest.mark.parametrize("text", [b"my notes\nthe last line, no newline", b"one line of notes, no newline"],
                         ids=["two-lines", "one-line"])
def test_a_file_at_the_journals_name_that_is_no_journal_is_not_cut(work, text):
    """A journal's last line cut by a kill is dropped; that was done before the file was known to
    be a journal at all: a user's file there lost its last line (and a one-line file became a
    journal, the run going on as if nothing was there)."""
    journal = work / "faults.journal.jsonl"
    journal.write_bytes(text)
    proc = launch(work / "batch.yaml", work / "faults.epc")
    refused_before_work(proc, ExitCode.OUTPUT, str(journal), "line 1")
    assert journal.read_bytes() == text


# -- other files a run writes: the performance report, the workers' log file ------------------------

def test_a_performance_report_path_that_is_a_fifo_is_refused_not_waited_on(work, tmp_path):
    """Checking whether FILE is an earlier report opened it for reading: on a FIFO the launcher
    waited for ever, before any cluster, saying nothing."""
    fifo = tmp_path / "perf.html"
    os.mkfifo(fifo)
    proc = launch(work / "batch.yaml", work / "faults.epc", "--performance-report", fifo, timeout=120)
    refused_before_work(proc, ExitCode.OUTPUT, str(fifo), "not a regular file")


@pytest.mark.parametrize("target", ["input", "out"])
def test_the_workers_log_file_never_lands_on_an_input_or_on_out(work, tmp_path, target):
    """logging.file is appended to by every worker: pointed at an input EPC (or at OUT) by a
    careless profile, each worker wrote its log lines into that model."""
    out = work / "faults.epc"
    if target == "out":
        launch(work / "batch.yaml", out).check_returncode()
    victim = work / "model.epc" if target == "input" else out
    before = sha(victim)
    profile = _profile(tmp_path, "local", logging={"file": str(victim)})
    proc = run_resqmp("launch", "--profile", profile, "--batch", work / "batch.yaml", "--output", out)
    refused_before_work(proc, ExitCode.OUTPUT, "logging.file", str(victim))
    assert sha(victim) == before


# -- the allow-list read literally (these held on main; kept as the probes' record) ------------------

@pytest.mark.parametrize("ref, allowed", [
    ("hostile_pkg.sub:f", ("hostile_pkg:*",)),      # a package's `*` is not its submodules'
    ("hostile_pkg.sub:f", ()),
    ("os.path:join", ("os:*",)),
    ("resqpy.multi_processing:function_multiprocessing", ()),   # resqpy's, but no wrapper
    ("ｈostile_pkg.sub:f", ("hostile_pkg.sub:*",)),   # a lookalike letter is another name
])
def test_a_refused_dotted_wrapper_imports_nothing(tmp_path, monkeypatch, ref, allowed):
    import sys
    from resqmp.batch import resolve_wrapper
    from resqmp.errors import BatchError
    pkg = tmp_path / "hostile_pkg"
    pkg.mkdir()
    marker = tmp_path / "init-ran"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (pkg / "sub.py").write_text("def f(index, parent_tmp_dir):\n    return index, True, None, []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BatchError):
        resolve_wrapper(ref, allowed)
    assert not marker.exists()
    assert not [m for m in sys.modules if m.startswith("hostile_pkg")]


# -- the task folder is the run's own ------------------------------------------------------------

def test_a_task_folder_planted_as_a_link_elsewhere_is_refused(work, tmp_path):
    """The task folder's name is predictable (a hash of OUT): planted in a shared directory as a
    link to another folder, workers wrote the task files there (where whoever owns it can swap
    them before they are merged into OUT) and the cleanup left them."""
    from resqmp.run import run_directory
    out = work / "faults.epc"
    shared = work / ".resqmp-tasks"
    shared.mkdir()
    elsewhere = tmp_path / "someone-elses"
    elsewhere.mkdir()
    run_directory(shared, out).symlink_to(elsewhere)
    proc = launch(work / "batch.yaml", out)
    refused_before_work(proc, ExitCode.OUTPUT, str(run_directory(shared, out)), "symbolic link")
    assert list(elsewhere.iterdir()) == []
    assert not out.exists()
