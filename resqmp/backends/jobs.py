"""Worker jobs: dask-jobqueue's Job classes, with submissions that are tried again and whose
failure is kept on the job (for the cluster's diagnostics) instead of crashing the event loop."""
from __future__ import annotations

import asyncio
import logging
import re
import shlex

import dask

import resqmp.backends.dask_jobqueue_import  # noqa: F401 (first: keeps the SIGINT handler)
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob
from distributed.deploy.spec import ProcessInterface

from resqmp.paths import shell_word

log = logging.getLogger(__name__)

SUBMIT_RETRY_DELAYS = (2.0, 5.0)      # seconds between submission attempts (busy controllers time out)


def submit_error_text(error: BaseException) -> str:
    """dask-jobqueue's RuntimeError carries the command, exit code, stdout and stderr: keep the exit
    code and the scheduler's own words."""
    text = str(error)
    code = re.search(r"Exit code: (\S+)", text)
    stderr = text.split("stderr:", 1)[1] if "stderr:" in text else text
    words = "; ".join(line.strip() for line in stderr.splitlines() if line.strip())
    return (f"(exit {code.group(1)}) " if code else "") + (words or type(error).__name__)


class RetriedSubmission:
    """Mixed in before a dask-jobqueue Job class. `submit_error` holds why the job could not be
    submitted after the retries (None while it was, or has not been tried)."""

    submit_error: str | None = None

    async def start(self):
        for delay in (*SUBMIT_RETRY_DELAYS, None):
            try:
                await super().start()
                self.submit_error = None
                return
            except Exception as e:   # noqa: BLE001 - kept for the cluster's diagnostics
                text = submit_error_text(e)
                if delay is not None:
                    log.warning("%s failed, trying again in %.0f s: %s", self.submit_command, delay, text)
                    await asyncio.sleep(delay)
                    continue
                self.submit_error = text[:2000]
                log.error("%s failed: %s", self.submit_command, text)
        # No job: the cluster carries on without this worker (no traceback from the event loop);
        # the launcher's wait for the first worker reports submit_error.
        self.job_id = None
        await ProcessInterface.start(self)


class QuotedWorkerCommand:
    """Mixed in before a dask-jobqueue Job class. dask-jobqueue joins the worker's command line
    with spaces, unquoted, and the job's shell reads it again: a space in a folder name split the
    argument, `$(...)` or backticks in it ran on the compute node. Data is never code:

    * the worker's TLS file names (the launcher's expanded paths: resqmp's temporary certificate
      in storage.shared_directory, or a site's certificate files) go in as worker arguments;
    * each item of worker_extra_args (the profile's, else the site's dask config) is one
      argument, passed as written;
    * local_directory is one word that the job's shell expands by the rule of profile paths (`~`,
      `$NAME`, `${NAME}`, `${NAME:-default}`: the default `${TMPDIR:-/tmp}` is the job's TMPDIR),
      nothing else (paths.shell_word)."""

    def __init__(self, *args, security=None, worker_extra_args=None, local_directory=None, **kwargs):
        if worker_extra_args is None:
            worker_extra_args = dask.config.get(f"jobqueue.{self.config_name}.worker-extra-args", None) or []
        if local_directory is None:
            local_directory = dask.config.get(f"jobqueue.{self.config_name}.local-directory", None)
        words = [str(a) for a in worker_extra_args]
        if security:
            files = security.get_tls_config_for_role("worker")
            words += [word for key, value in files.items() if key != "ciphers"      # no command-line option
                      for word in ("--tls-" + key.replace("_", "-"), str(value))]
        worker_extra_args = [shlex.quote(word) for word in words]
        if local_directory is not None:
            local_directory = shell_word(str(local_directory))
        super().__init__(*args, security=None, worker_extra_args=worker_extra_args,
                         local_directory=local_directory, **kwargs)


def directive_word(value: str) -> str:
    """A path as one value of a #SBATCH or #$ directive: double-quoted when it holds a space, a tab
    or #, which sbatch and qsub then read as part of it (measured: tests/test_directive_paths.py);
    values holding quotes or backslashes are refused before (schedulers.directive_trouble)."""
    return f'"{value}"' if any(c in value for c in " \t#") else value


def quote_log_directives(script: str, prefix: str, log_directory: str | None) -> str:
    """`script` (a job header, or a whole job script) with the `-e`/`-o` directives that
    dask-jobqueue writes for log_directory holding the path as one value (directive_word)."""
    if not log_directory or directive_word(log_directory) == log_directory:
        return script
    lines = script.split("\n")
    for i, line in enumerate(lines):
        for option in ("-e", "-o"):
            start = f"{prefix} {option} {log_directory}"
            if line.startswith(start) and (line == start or line[len(start)] == "/"):
                lines[i] = f"{prefix} {option} {directive_word(line[len(prefix) + len(option) + 2:])}"
    return "\n".join(lines)


class QuotedLogDirectives:
    """Mixed in before dask-jobqueue's SLURM and SGE Job classes: their `-e`/`-o` directives carry
    a log folder with a space as one value (quote_log_directives) instead of one the scheduler
    cuts short (sbatch: "Invalid directive", qsub: "Unknown option", or for a `#`, silently
    another file)."""

    directive_prefix = "#"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.job_header = quote_log_directives(self.job_header, self.directive_prefix, self.log_directory)


class SLURMWorkerJob(RetriedSubmission, QuotedWorkerCommand, QuotedLogDirectives, SLURMJob):
    directive_prefix = "#SBATCH"


class SGEWorkerJob(RetriedSubmission, QuotedWorkerCommand, QuotedLogDirectives, SGEJob):
    directive_prefix = "#$"


class PBSWorkerJob(RetriedSubmission, QuotedWorkerCommand, PBSJob):
    pass


class LSFWorkerJob(RetriedSubmission, QuotedWorkerCommand, LSFJob):
    pass
