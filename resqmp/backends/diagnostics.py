"""What a batch scheduler says about a cluster's worker jobs, for the message shown when no
worker arrives: failed submissions, its queue view (squeue, qstat, bjobs), and the last lines of
the jobs' output files (a worker that started and died says why there)."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from resqmp.backends.schedulers import JobState, Scheduler, run


@dataclass
class JobsSeen:
    """What the diagnostics need to know about one cluster's worker jobs."""
    scheduler: Scheduler
    job_ids: list[str]
    submit_errors: list[str]
    log_directory: str | None
    job_name: str
    started: float                      # time.time() when the cluster started: older logs are not its own


def _output(cmd: list[str]) -> str:
    proc = run(cmd)
    if isinstance(proc, str):
        return proc
    return (proc.stdout + proc.stderr).rstrip() or "(no output)"


def view(jobs: JobsSeen) -> str:
    """Failed submissions, the scheduler's view of the jobs (state, reason), their logs' tails."""
    parts = []
    if jobs.submit_errors:
        parts.append(f"{jobs.scheduler.submit_command} failed: {jobs.submit_errors[-1]}")
    ids = jobs.job_ids
    if not ids:
        if not jobs.submit_errors:
            parts.append("no job was submitted")
        return "\n".join(parts)
    parts.append(f"jobs {', '.join(ids)}:")
    for cmd in jobs.scheduler.view_commands(ids):
        out = _output(cmd)
        if out == "(no output)":
            out += "\n(none listed: the jobs ended; their output follows if it is in the log directory)"
        parts.append(f"$ {shlex.join(cmd)}\n{jobs.scheduler.trim_view(cmd, ids, out)}")
    parts.extend(log_tails(jobs, ids))
    return "\n".join(parts)


def ended_before_a_worker_came(jobs: JobsSeen) -> str | None:
    """When every submitted job has ended (none pending or running, as the scheduler says) and
    no submission is left to try: why, from the jobs' own output. None while one may still start."""
    if not jobs.job_ids:
        return None
    states = jobs.scheduler.job_states(jobs.job_ids)
    if not states or any(s is not JobState.ENDED for s in states.values()):
        return None
    tails = log_tails(jobs, jobs.job_ids, lines=12)
    said = " | ".join(ln.strip() for t in tails for ln in t.splitlines()[1:] if ln.strip())
    return (f"every worker job ended before a worker connected ({', '.join(jobs.job_ids)})"
            + (f"; the job output says: {said}" if said else
               f"; no job output found in {jobs.log_directory}"))


def log_tails(jobs: JobsSeen, ids: list[str], count: int = 2, lines: int = 6) -> list[str]:
    """The last lines of the first jobs' output files."""
    log_dir = jobs.log_directory
    if not log_dir or not os.path.isdir(log_dir):
        return []
    try:
        names = os.listdir(log_dir)
    except OSError:
        return []
    out = []
    for job_id in ids[:count]:
        for name in sorted(jobs.scheduler.log_names(jobs.job_name or "worker", job_id, names)):
            path = os.path.join(log_dir, name)
            try:
                if os.path.getmtime(path) < jobs.started - 1:      # an older run's job with the same id
                    continue
                with open(path, errors="replace") as f:
                    tail = [ln.rstrip() for ln in f.readlines()[-200:] if ln.strip()][-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"$ tail {path}\n" + "\n".join(tail))
    return out
