"""A worker whose scheduler closed while its heartbeat was on its way logs one line, not
distributed's chained tracebacks: local workers write to the launcher's terminal, and at the end
of a run on a loaded machine (the nanny's close of the worker slower than the scheduler's) the
user got two tracebacks after "8 succeeded" (seen in test_resume_damaged under load)."""
from __future__ import annotations

import logging
import subprocess
import sys


def test_a_heartbeat_to_a_closed_scheduler_is_one_line_and_other_errors_keep_their_traceback():
    # a fresh process: the worker's logger as distributed configures it, the preload's filter on it
    code = """
import logging
import distributed
from distributed.comm.core import CommClosedError
from resqmp.worker_preload import quiet_heartbeat_errors
quiet_heartbeat_errors()
quiet_heartbeat_errors()                      # preloaded twice: still one filter
log = logging.getLogger("distributed.worker")
assert len(log.filters) == 1
for error in (CommClosedError("in <TCP (closed) ConnectionPool.heartbeat_worker>: Stream is closed"),
              ValueError("a real bug")):
    try:
        raise error
    except Exception:
        log.exception("Failed to communicate with scheduler during heartbeat.")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    heartbeat = [ln for ln in lines if "heartbeat" in ln]
    assert len(heartbeat) == 2, proc.stderr
    assert "WARNING" in heartbeat[0] and "the scheduler closed the connection (CommClosedError)" in heartbeat[0]
    # the closed connection: no traceback; anything else: distributed's, as it was
    assert proc.stderr.count("Traceback") == 1 and "ValueError: a real bug" in proc.stderr
    assert proc.stderr.index("Traceback") > proc.stderr.index(heartbeat[1])
    assert logging.getLogger("distributed.worker").filters == []      # nothing changed in this process
