"""Warming resqpy's numba cache: after warm_numba_cache() in one process, a fresh worker process
runs its first find-faces task without compiling (numba's own counters say so, not a stopwatch)."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading

from resqmp.warm import _cache_lock, _cache_files

FIRST_TASK = """
import json, sys
from resqmp.batch import load
from resqmp.numba_stats import resqpy_numba_stats
from resqmp.tasks import run_task
batch = load(sys.argv[1])
record = run_task(batch.function, batch.tasks[0], 0, sys.argv[2])
print(json.dumps({"seconds": record["seconds"], "success": record["success"], "error": record["error"],
                  "numba": resqpy_numba_stats()}))
"""


def _env(cache_dir) -> dict:
    return {**os.environ, "RESQPY_NUMBA_CACHE": "true", "NUMBA_CACHE_DIR": str(cache_dir),
            "NUMBA_NUM_THREADS": "1", "HDF5_USE_FILE_LOCKING": "FALSE"}


def test_first_task_after_warm_needs_no_jit(example, tmp_path):
    cache = tmp_path / "numba-cache"        # empty: this process's warm-up compiles everything
    proc = subprocess.run([sys.executable, "-m", "resqmp.warm"], env=_env(cache), capture_output=True,
                          text=True, timeout=300, check=True)
    warm = json.loads(proc.stdout)
    assert warm["cache_enabled"] and warm["cache_dir"] == str(cache)
    assert warm["errors"] == {}
    assert set(warm["seconds"]) == {"find_faces", "mesh", "blocked_well"}
    assert warm["cache_files_after"] > warm["cache_files_before"]
    compiled = _cache_files(str(cache))

    (tmp_path / "run").mkdir()
    proc = subprocess.run([sys.executable, "-c", FIRST_TASK, str(example["batch"]), str(tmp_path / "run")],
                          env=_env(cache), capture_output=True, text=True, timeout=300, check=True)
    first = json.loads(proc.stdout.strip().splitlines()[-1])
    assert first["success"], first["error"]
    # numba loaded the find-faces path from the cache and compiled nothing (cold: misses, 5-8 s of JIT)
    numba = first["numba"]
    assert numba["cache_enabled"] and numba["cache_dir"] == str(cache), numba
    assert numba["cache_hits"] > 0 and numba["cache_misses"] == 0, numba
    assert _cache_files(str(cache)) == compiled      # and wrote nothing new into it


def _lock_is_free(cache) -> bool:
    """Whether another open of the lock file gets the lock now (flock: per open file)."""
    fd = os.open(cache / ".resqmp-warm.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_warm_ups_take_turns_on_the_cache(tmp_path):
    """A second warm-up waits for the lock of the first instead of compiling alongside it, then
    holds the lock itself (rather than giving up on it and compiling unlocked)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    first = os.open(cache / ".resqmp-warm.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(first, fcntl.LOCK_EX)                   # the first warm-up is compiling
    inside, leave = threading.Event(), threading.Event()

    def second_warm_up():
        with _cache_lock(str(cache)):
            inside.set()
            leave.wait(300)

    second = threading.Thread(target=second_warm_up, daemon=True)
    second.start()
    try:
        # Held out while the first holds the lock: this cannot flip on a slow machine (it can only
        # enter after the unlock below); a lock that did not hold it out would enter at once.
        assert not inside.wait(2)
        fcntl.flock(first, fcntl.LOCK_UN)
        # it enters once the lock is free (it polls every 0.2 s; 120 s is a deadline for a machine
        # of any speed, and far below the 600 s after which _cache_lock would go on unlocked)...
        assert inside.wait(120)
        assert not _lock_is_free(cache)                 # ...holding the lock itself
    finally:
        leave.set()
        second.join(120)
        os.close(first)
    assert not second.is_alive() and _lock_is_free(cache)     # and lets go when done
