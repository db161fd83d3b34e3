"""glibc's malloc left to size itself while a task runs, on Dask's workers too.

Dask's nannies start every worker with MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-
environ), so that freed memory goes back to the kernel at once and the worker's memory monitor
sees the truth. Setting it also freezes glibc's mmap threshold at 128 KB: every array above that
is mapped on allocation and unmapped on free, and its pages are faulted in and zeroed again by the
next task step. resqpy's wrappers make many such temporary arrays: on the benchmark's find-faces
tasks, ~2000 page faults and 60 % more CPU per task than the same call outside Dask (bench/RESULTS.md).

So while a task runs, the heap keeps what it frees (the thresholds glibc's own dynamic rule would
reach: 32 MB to map, 64 MB to trim), and when the worker's last running task ends, Dask's setting
applies again, so between tasks the worker returns memory as Dask intends. Only Dask's default
value is overridden: a threshold the site chose (any other value, exported or in its dask config)
is left as it is. Not on a glibc system (musl, macOS): nothing to do.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from contextlib import contextmanager
from functools import lru_cache

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's fixed mmap threshold once any malloc variable is set (DEFAULT_MMAP_THRESHOLD_MIN)
_FIXED_MMAP = 128 * 1024
#: what glibc's dynamic rule grows to on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX; trim follows at 2x)
_TASK_MMAP = 32 * 1024 * 1024
_TASK_TRIM = 2 * _TASK_MMAP

_lock = threading.Lock()
_running = 0          # tasks of this process inside task_heap(), over all its threads
_restore: int | None = None


@lru_cache(maxsize=1)
def _mallopt():
    """glibc's mallopt, or None (another C library, or none found)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc.mallopt
    except (OSError, AttributeError):
        return None


@lru_cache(maxsize=1)
def _dask_default() -> str | None:
    """MALLOC_TRIM_THRESHOLD_ as distributed ships it (its distributed.yaml), as the nanny writes it."""
    try:
        import yaml
        import distributed
        with open(os.path.join(os.path.dirname(distributed.__file__), "distributed.yaml")) as f:
            shipped = yaml.safe_load(f)["distributed"]["nanny"]["pre-spawn-environ"]
        value = shipped.get("MALLOC_TRIM_THRESHOLD_")
        return None if value is None else str(value)
    except Exception:   # noqa: BLE001 - another layout: then nothing counts as Dask's default
        return None


def _dask_trim_threshold() -> int | None:
    """The trim threshold this worker runs with when it is Dask's default, else None."""
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if value is None or value != _dask_default():
        return None
    try:
        from distributed import get_worker
        get_worker()          # a Dask worker's: the caller's own process is not ours to change
    except (ImportError, ValueError):
        return None
    return int(value)


@contextmanager
def task_heap():
    """Around one task's call: the heap keeps its freed memory until the worker's last running task ends."""
    global _running, _restore
    with _lock:
        if _running == 0:
            _restore = _dask_trim_threshold()
            if _restore is not None and _mallopt() is not None:
                _mallopt()(_M_MMAP_THRESHOLD, _TASK_MMAP)
                _mallopt()(_M_TRIM_THRESHOLD, _TASK_TRIM)
            else:
                _restore = None
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _restore is not None:
                _mallopt()(_M_MMAP_THRESHOLD, _FIXED_MMAP)
                _mallopt()(_M_TRIM_THRESHOLD, _restore)
                _restore = None
