"""Worker jobs: dask-jobqueue's Job classes, with submissions that are tried again and whose
failure is kept on the job (for the cluster's diagnostics) instead of crashing the event loop."""
from __future__ import annotations

import asyncio
import logging
import re

import resqmp.backends.dask_jobqueue_import  # noqa: F401 (first: keeps the SIGINT handler)
from dask_jobqueue.lsf import LSFJob
from dask_jobqueue.pbs import PBSJob
from dask_jobqueue.sge import SGEJob
from dask_jobqueue.slurm import SLURMJob
from distributed.deploy.spec import ProcessInterface

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


class SLURMWorkerJob(RetriedSubmission, SLURMJob):
    pass


class SGEWorkerJob(RetriedSubmission, SGEJob):
    pass


class PBSWorkerJob(RetriedSubmission, PBSJob):
    pass


class LSFWorkerJob(RetriedSubmission, LSFJob):
    pass
