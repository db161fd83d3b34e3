"""Helpers for fault-injection tests: start a launch to kill, find processes by an environment
marker, watch OUT."""
from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
import zipfile

import psutil

from conftest import ALLOW_TEST_WRAPPERS, BIN, TESTS


def start_launch(batch, out, *extra, marker=None) -> subprocess.Popen:
    """`resqmp launch --profile local` in its own session (so a test can signal its group)."""
    env = {**os.environ, **(marker or {}), "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([str(BIN / "resqmp"), "launch", "--profile", "local", "--batch", str(batch),
                             "--output", str(out), *map(str, extra), *ALLOW_TEST_WRAPPERS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def wait_for(predicate, timeout=120.0, what="condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def new_marker() -> dict:
    """An environment variable every process of one launch inherits (workers included)."""
    return {"RESQMP_TEST_MARK": uuid.uuid4().hex}


def marked_processes(marker: dict) -> list[psutil.Process]:
    key, value = next(iter(marker.items()))
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(key) == value:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_until_gone(marker: dict, timeout: float = 120.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in marked_processes(marker) if p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            return []
        time.sleep(0.5)
    return left


def launch_killed_once_journaled(batch, out, *extra, records: int, what: str) -> list[dict]:
    """`resqmp launch` SIGKILLed once its journal holds `records` results, every process it started
    gone; the journal's records then (what the next run of the same command resumes from)."""
    import signal
    from test_reliability import journal_records
    marker = new_marker()
    proc = start_launch(batch, out, *extra, marker=marker)
    wait_for(lambda: len(journal_records(out)) >= records, what=what)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert wait_until_gone(marker) == []
    return journal_records(out)


def worker_processes(launcher_pid: int) -> list[psutil.Process]:
    """The Dask worker interpreters a local launcher spawned (multiprocessing children)."""
    try:
        children = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "spawn_main" in " ".join(c.cmdline())]


class OutputWatcher(threading.Thread):
    """Samples OUT every few ms; any moment OUT exists it must be a complete EPC with its .h5."""

    def __init__(self, out):
        super().__init__(daemon=True)
        self.out, self.samples, self.bad, self._halt = out, 0, [], threading.Event()

    def run(self):
        while not self._halt.is_set():
            if self.out.exists():
                self.samples += 1
                try:
                    with zipfile.ZipFile(self.out) as z:
                        if z.testzip() is not None or not any(n.endswith(".xml") for n in z.namelist()):
                            self.bad.append("incomplete zip")
                    if not self.out.with_suffix(".h5").exists():
                        self.bad.append("EPC without its .h5")
                except (zipfile.BadZipFile, OSError) as e:
                    if self.out.exists():
                        self.bad.append(f"{type(e).__name__}: {e}")
            time.sleep(0.005)

    def stop(self):
        self._halt.set()
        self.join()
