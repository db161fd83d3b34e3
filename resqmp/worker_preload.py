"""Preloaded into worker processes (distributed.worker.preload / dask worker --preload).

- resqpy is imported at worker start, not on the first task (its import costs ~2 s; numba's
  compiled code then comes from the warm cache).
- A terminal's Ctrl-C reaches every process of the foreground group, local workers included; the
  launcher owns teardown, so workers ignore SIGINT instead of dying with a traceback each.
- A worker whose scheduler closed while a heartbeat was on its way (the end of a run, on a loaded
  machine: the nanny's close of the worker took longer than the scheduler's) logs that in one
  line, not with distributed's two chained tracebacks on the launcher's terminal (local workers
  share its stderr).
"""
import logging
import signal
import threading

_HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


class _HeartbeatToClosedScheduler(logging.Filter):
    """distributed.worker's heartbeat error whose cause is a closed connection: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith(_HEARTBEAT_FAILED):
            from distributed.comm.core import CommClosedError
            error = record.exc_info[1]
            if isinstance(error, (CommClosedError, OSError)):
                record.msg = f"{_HEARTBEAT_FAILED}: the scheduler closed the connection ({type(error).__name__})"
                record.args = ()
                record.exc_info = record.exc_text = None
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_heartbeat_errors() -> None:
    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _HeartbeatToClosedScheduler) for f in worker_log.filters):
        worker_log.addFilter(_HeartbeatToClosedScheduler())


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_heartbeat_errors()
    import resqpy.multi_processing  # noqa: F401
