"""Preloaded into local worker processes (distributed.worker.preload).

A terminal's Ctrl-C reaches every process of the foreground group, local workers included; the
launcher owns teardown, so workers ignore SIGINT instead of dying with a traceback each."""
import signal
import threading


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
