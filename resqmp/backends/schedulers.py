"""One description per batch scheduler: what resqmp knows about SLURM, Grid Engine, PBS and LSF
beyond dask-jobqueue's classes (which build the job header and submit and cancel jobs).

Each Scheduler names its dask-jobqueue cluster class and resqmp's Job class for it, how it reads a
walltime, how to ask it about jobs (states translated into one vocabulary, and the views shown
to the user when no worker arrives), the names of its job logs, and the adjustments resqmp makes to
the options for it. A new scheduler is one more description here.
"""
from __future__ import annotations

import enum
import getpass
import math
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable

import resqmp.backends.dask_jobqueue_import  # noqa: F401 (first: keeps the SIGINT handler)
from dask_jobqueue import LSFCluster, PBSCluster, SGECluster, SLURMCluster
from dask_jobqueue.core import JobQueueCluster

from resqmp.backends import jobs


class JobState(enum.Enum):
    ALIVE = "alive"          # pending, held or running: a worker may still come from it
    ENDED = "ended"          # finished, failed, cancelled, or stuck in an error state
    UNKNOWN = "unknown"      # the scheduler did not say (command failed, output not understood)


# --------------------------------------------------------------------------- walltimes

#: A walltime that sets no limit (SLURM's UNLIMITED, SGE's INFINITY): workers need not retire.
NO_LIMIT = math.inf


def _clock(text: str, fields: int) -> list[int] | None:
    parts = text.split(":")
    if not 1 <= len(parts) <= fields or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    return [int(p) for p in parts]


def slurm_walltime(text: str) -> float | None:
    """sbatch --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; no limit: 0 (in any of these forms:
    sbatch reads a limit of zero minutes as none), -1, UNLIMITED or INFINITE (any case)."""
    if text == "-1" or text.upper() in ("UNLIMITED", "INFINITE"):
        return NO_LIMIT
    days, dash, clock = text.rpartition("-")
    if dash and not (days.isdigit() and days.isascii()):
        return None
    parts = _clock(clock, 3)
    if parts is None:
        return None
    if dash:
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts
    secs = ((int(days or 0) * 24 + h) * 60 + m) * 60 + s
    return secs or NO_LIMIT


def lsf_walltime(text: str) -> float | None:
    """bsub -W: [H:]M."""
    parts = _clock(text, 2)
    if parts is None:
        return None
    return parts[0] * 60 if len(parts) == 1 else (parts[0] * 60 + parts[1]) * 60


def pbs_walltime(text: str) -> float | None:
    """[[H:]M:]S."""
    parts = _clock(text, 3)
    if parts is None:
        return None
    secs = 0
    for p in parts:
        secs = secs * 60 + p
    return secs


def sge_walltime(text: str) -> float | None:
    """sge_types(5) time_specifier: seconds as a decimal, hexadecimal (0x1C20) or octal (017040)
    integer, or H:M:S in decimal where a zero field may be left empty (1::1, ::30); qsub refuses
    M:S ("not a time value"). INFINITY (any case, as in queue limits) for no limit."""
    if text.upper() == "INFINITY":
        return NO_LIMIT
    if ":" not in text:
        if not text.isascii() or not text.isalnum():
            return None
        try:
            return int(text, 0) if not text.startswith("0") or text == "0" or text[1:2] in "xX" \
                else int(text, 8)           # C's strtol with base 0: 010 is 8 seconds
        except ValueError:
            return None
    parts = text.split(":")
    if len(parts) != 3 or not all(p == "" or (p.isdigit() and p.isascii()) for p in parts):
        return None
    h, m, s = (int(p or 0) for p in parts)
    return (h * 60 + m) * 60 + s


# --------------------------------------------------------------------------- asking the scheduler

def run(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess | str:
    """The command's result, or a sentence saying why there is none."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return f"({cmd[0]} not found)"
    except subprocess.TimeoutExpired:
        return f"({' '.join(cmd)} timed out after {timeout:.0f} s)"


def whoami() -> str:
    return os.environ.get("USER") or getpass.getuser()


def _states_from_rows(ids: list[str], rows: dict[str, str], ended: Callable[[str], bool]) -> dict[str, JobState]:
    return {i: JobState.ENDED if i not in rows or ended(rows[i]) else JobState.ALIVE for i in ids}


def slurm_states(ids: list[str]) -> dict[str, JobState]:
    proc = run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T"])
    if isinstance(proc, str):
        return {i: JobState.UNKNOWN for i in ids}
    if proc.returncode != 0:
        # every id purged from the controller's memory: "Invalid job id specified"
        state = JobState.ENDED if "invalid job id" in proc.stderr.lower() else JobState.UNKNOWN
        return {i: state for i in ids}
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines() if len(line.split()) == 2)
    alive = {"PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
             "RESIZING", "SIGNALING", "STAGE_OUT"}
    return _states_from_rows(ids, rows, lambda state: state.strip() not in alive)


def sge_states(ids: list[str]) -> dict[str, JobState]:
    proc = run(["qstat", "-u", whoami()])
    if isinstance(proc, str) or proc.returncode != 0:
        return {i: JobState.UNKNOWN for i in ids}
    rows = {fields[0]: fields[4] for fields in (ln.split() for ln in proc.stdout.splitlines()[2:]) if len(fields) > 4}
    # E (Eqw): the job will not run until an admin clears the error
    return _states_from_rows(ids, rows, lambda state: "E" in state)


def pbs_states(ids: list[str]) -> dict[str, JobState]:
    proc = run(["qstat", "-x", *ids])
    if isinstance(proc, str) or "invalid option" in (proc.stderr or ""):      # Torque has no -x
        return {i: JobState.UNKNOWN for i in ids}
    rows = {fields[0]: fields[4] for fields in (ln.split() for ln in proc.stdout.splitlines()) if len(fields) >= 6}
    gone = {i for i in ids if f"Unknown Job Id {i}" in proc.stderr}
    return {i: JobState.ENDED if i in gone or rows.get(i) == "F" else
            JobState.ALIVE if i in rows else JobState.UNKNOWN for i in ids}


def lsf_states(ids: list[str]) -> dict[str, JobState]:
    proc = run(["bjobs", "-noheader", "-o", "jobid stat", *ids])
    if isinstance(proc, str):
        return {i: JobState.UNKNOWN for i in ids}
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines() if len(line.split()) == 2)
    gone = {i for i in ids if f"Job <{i}> is not found" in proc.stdout + proc.stderr}
    return {i: JobState.ENDED if i in gone or rows.get(i, "").strip() in ("DONE", "EXIT") else
            JobState.ALIVE if i in rows else JobState.UNKNOWN for i in ids}


def _slurm_view(ids: list[str]) -> list[list[str]]:
    return [["squeue", "-j", ",".join(ids), "-o", "%.12i %.10P %.20j %.9T %.10M %.20R"]]


def _slurm_trim(cmd: list[str], ids: list[str], out: str) -> str:
    if len(out.splitlines()) == 1:
        out += "\n(none listed: the jobs ended; their output follows if it is in the log directory)"
    return out


def _sge_view(ids: list[str]) -> list[list[str]]:
    # qstat -j also explains why a pending job cannot be scheduled, when the site enables it
    return [["qstat", "-u", whoami()]] + [["qstat", "-j", i] for i in ids[:3]]


def _sge_trim(cmd: list[str], ids: list[str], out: str) -> str:
    if cmd[1] == "-u":
        lines = [ln for ln in out.splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}]
        keep = lines[:1] + [ln for ln in lines[1:] if ln.split()[0] in ids]
        return "\n".join(keep) if len(keep) > 1 else out
    wanted = ("job_number", "job_state", "error reason", "scheduling info", "hard_queue_list",
              "hard resource_list", "cannot run")
    return "\n".join(ln for ln in out.splitlines() if any(ln.strip().startswith(w) or w in ln for w in wanted)) or out


def _keep(cmd: list[str], ids: list[str], out: str) -> str:
    return out


# --------------------------------------------------------------------------- job logs

def _slurm_logs(job_name: str, job_id: str, names: list[str]) -> set[str]:
    return {f"{job_name}-{job_id}.err", f"{job_name}-{job_id}.out"} & set(names)


def _sge_logs(job_name: str, job_id: str, names: list[str]) -> set[str]:
    return {f"{job_name}.o{job_id}", f"{job_name}.e{job_id}"} & set(names)


def _lsf_logs(job_name: str, job_id: str, names: list[str]) -> set[str]:
    return {n for n in names if n.endswith((f"-{job_id}.err", f"-{job_id}.out"))}   # named after the worker


# --------------------------------------------------------------------------- option adjustments

def _as_list(value: Any) -> list:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _sge_adjustments(kw: dict[str, Any], shared: str) -> None:
    """jobqueue writes `#$ -cwd`: the job would start in the launcher's working directory, which
    need not exist on the execution host (the job then hangs in state Eqw). Start it in the
    shared directory instead, unless the profile chose a directory itself. And the job script is
    bash: a queue in posix_compliant mode runs it with the queue's shell (often csh), ignoring the
    #! line, unless the job names its shell (-S), which a site's own -S directive still does."""
    skip = [str(s) for s in _as_list(kw.get("job_directives_skip"))]
    directives = [str(d) for d in _as_list(kw.get("job_extra_directives"))]
    ours = []
    if "-cwd" not in skip and not any(d.split()[:1] in (["-wd"], ["-cwd"]) for d in directives):
        skip.append("-cwd")
        ours.append(f"-wd {jobs.directive_word(shared)}")
    if not any(d.split()[:1] == ["-S"] for d in directives):
        ours.append("-S /bin/bash")
    kw["job_directives_skip"] = skip
    kw["job_extra_directives"] = ours + directives


def _no_adjustment(kw: dict[str, Any], shared: str) -> None:
    pass


# --------------------------------------------------------------------------- directive values

# Characters a scheduler reads specially in a directive line or a log path, with what it makes of
# them. dask-jobqueue writes the log folder and the job name (and resqmp SGE's working directory)
# into directive lines as they are; a folder or name holding one of these is refused (jobqueue.py).
# sbatch (22.05) and qsub (SGE 8.1.9) read a double-quoted value as one, spaces and all (measured:
# tests/test_directive_paths.py): resqmp quotes the log folders and the working directory it
# writes for them (jobs.QuotedLogDirectives). PBS and LSF cannot be tried here: nothing is quoted.
_QUOTES = {
    '"': ('"', "the directive parser reads quotes"),
    "'": ("'", "the directive parser reads quotes"),
    "\\": ("\\", "the directive parser reads escapes"),
}
_UNQUOTED = {
    **_QUOTES,
    " ": ("a space", "the value ends there"),
    "\t": ("a tab", "the value ends there"),
    "#": ("#", "the rest of the line may be read as a comment"),
}
_SLURM_SPECIALS = {**_QUOTES, "%": ("%", "sbatch replaces %-patterns (%j, %u, ...) in log file names")}
_SGE_SPECIALS = {**_QUOTES,
                 "#": ("#", "qsub ends the value there, quoted or not"),
                 ":": (":", "qsub reads HOST:PATH"),
                 ",": (",", "qsub reads a list of paths"),
                 "$": ("$", "Grid Engine replaces $JOB_ID, $USER, ... in log paths")}
_PBS_SPECIALS = {**_UNQUOTED, ":": (":", "qsub reads HOST:PATH")}
_LSF_SPECIALS = {**_UNQUOTED, "%": ("%", "bsub replaces %J and %I in log file names")}
#: in a name (job name), which no scheduler here quotes
_NAME_SPECIALS = {" ": ("a space", "the value ends there"), "\t": ("a tab", "the value ends there"),
                  "#": ("#", "the rest of the line may be read as a comment")}


# --------------------------------------------------------------------------- the descriptions

@dataclass(frozen=True)
class Scheduler:
    name: str                                   # the profile's backend
    cluster_class: type[JobQueueCluster]        # dask-jobqueue's class: option names, messages
    job_class: type                             # resqmp's Job class (dask-jobqueue's, submissions retried)
    walltime_forms: str                         # for messages
    walltime_seconds_of: Callable[[str], int | None]
    default_walltime: str
    job_states: Callable[[list[str]], dict[str, JobState]]
    view_commands: Callable[[list[str]], list[list[str]]]
    trim_view: Callable[[list[str], list[str], str], str]
    log_names: Callable[[str, str, list[str]], set[str]]
    adjust_options: Callable[[dict[str, Any], str], None] = field(default=_no_adjustment)
    directive_prefix: str = "#"
    directive_specials: dict[str, tuple[str, str]] = field(default_factory=dict)   # in paths resqmp writes
    quotes_directives: bool = False             # log folders (and -wd) written double-quoted

    def directive_trouble(self, value: str, name: bool = False) -> str | None:
        """Why `value` (a path, or with name=True the job name) cannot go into this scheduler's
        directive lines, or None."""
        specials = {**self.directive_specials, **_NAME_SPECIALS} if name else self.directive_specials
        for char in value:
            if char in specials:
                what, why = specials[char]
                return f"holds {what}, which {self.directive_prefix} directives do not carry as written ({why})"
            if ord(char) < 32 or ord(char) == 127:
                return (f"holds a line break or control character (U+{ord(char):04X}), which would end "
                        f"the {self.directive_prefix} directive line")
        return None

    @property
    def submit_command(self) -> str:
        return self.job_class.submit_command.split()[0]

    @property
    def cancel_command(self) -> str:
        return self.job_class.cancel_command

    def walltime_seconds(self, walltime: Any) -> float | None:
        """Seconds in a walltime as this scheduler reads it (NO_LIMIT for none); None if it does
        not take the form."""
        if walltime is None or isinstance(walltime, (bool, float)):
            return None             # no scheduler takes 1.5 (and it must not be truncated to 1)
        # a number (YAML's reading of `90`) is read as the scheduler reads the digits
        return self.walltime_seconds_of(str(walltime).strip())


SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (
    Scheduler("slurm", SLURMCluster, jobs.SLURMWorkerJob,
              "H:MM:SS, D-H:MM:SS, minutes, or UNLIMITED for no limit", slurm_walltime,
              "01:00:00", slurm_states, _slurm_view, _slurm_trim, _slurm_logs,
              directive_prefix="#SBATCH", directive_specials=_SLURM_SPECIALS, quotes_directives=True),
    Scheduler("sge", SGECluster, jobs.SGEWorkerJob, "H:MM:SS, seconds, or INFINITY for no limit", sge_walltime,
              "01:00:00", sge_states, _sge_view, _sge_trim, _sge_logs, _sge_adjustments,
              directive_prefix="#$", directive_specials=_SGE_SPECIALS, quotes_directives=True),
    Scheduler("pbs", PBSCluster, jobs.PBSWorkerJob, "H:MM:SS or seconds", pbs_walltime,
              "01:00:00", pbs_states, lambda ids: [["qstat", "-x", *ids], ["qstat", "-f", ids[0]]], _keep, _sge_logs,
              directive_prefix="#PBS", directive_specials=_PBS_SPECIALS),
    Scheduler("lsf", LSFCluster, jobs.LSFWorkerJob, "H:MM or minutes", lsf_walltime,
              "01:00", lsf_states, lambda ids: [["bjobs", "-w", *ids], ["bjobs", "-p", *ids]], _keep, _lsf_logs,
              directive_prefix="#BSUB", directive_specials=_LSF_SPECIALS),
)}
