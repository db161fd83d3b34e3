"""Preloaded into worker processes (distributed.worker.preload / dask worker --preload).

- resqpy is imported at worker start, not on the first task (its import costs ~2 s; numba's
  compiled code then comes from the warm cache).
- A terminal's Ctrl-C reaches every process of the foreground group, local workers included; the
  launcher owns teardown, so workers ignore SIGINT instead of dying with a traceback each.
"""
import signal
import threading


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    import resqpy.multi_processing  # noqa: F401
