"""Warming resqpy's numba cache: after warm_numba_cache() in one process, a fresh worker process
runs its first find-faces task without compiling (well under 1 s)."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time

from resqmp.warm import _cache_lock, _cache_files

FIRST_TASK = """
import json, sys, time
t0 = time.perf_counter()
from resqmp.batch import load
from resqmp.tasks import run_task
batch = load(sys.argv[1])
imported = time.perf_counter() - t0
record = run_task(batch.function, batch.tasks[0], 0, sys.argv[2])
print(json.dumps({"import": imported, "seconds": record["seconds"], "success": record["success"],
                  "error": record["error"]}))
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
    assert first["seconds"] <= 1.0, first            # cold, this is 5-8 s of JIT
    assert _cache_files(str(cache)) == compiled      # loaded from the cache, nothing new compiled


def test_warm_ups_take_turns_on_the_cache(tmp_path):
    """A second warm-up waits for the lock of the first instead of compiling alongside it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    fd = os.open(cache / ".resqmp-warm.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    release = threading.Timer(0.5, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    release.start()
    start = time.perf_counter()
    with _cache_lock(str(cache)) as waited:
        assert waited >= 0.4
    assert time.perf_counter() - start < 5
    release.join()
