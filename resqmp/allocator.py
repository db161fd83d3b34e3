"""glibc's malloc left to size itself while a task runs, on Dask's workers too.

Dask's nannies start every worker with MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-
environ), so that freed memory goes back to the kernel at once and the worker's memory monitor
sees the truth. Setting it also freezes glibc's mmap threshold at 128 KB: every array above that
is mapped on allocation and unmapped on free, and its pages are faulted in and zeroed again by the
next task step. resqpy's wrappers make many such temporary arrays: on the benchmark's find-faces
tasks, ~2000 page faults and 60 % more CPU per task than the same call outside Dask (bench/RESULTS.md).

So while tasks run, the heap keeps what it frees (the thresholds glibc's own dynamic rule would
reach at most: 32 MB to map, 64 MB to trim). Once the worker has had no running task for
GIVE_BACK_AFTER seconds, Dask's setting applies again and what the heap kept goes back to the
kernel: tasks that follow each other (a group, a worker's queue) reuse
it, an idle worker returns memory as Dask intends (and its memory monitor can unpause it).
Setting the thresholds back trims nothing by itself: glibc trims an arena only when a chunk of
64 KB or more is freed in it, and malloc_trim(0) releases the free chunks of every arena but the
top of the main arena's only (never the top of a thread's arena, where a task's freed arrays end
up). So each task thread leaves a 64 KB chunk from its own arena when its task ends; giving back
frees them (glibc then trims each arena's top with Dask's threshold), then malloc_trim(0)
releases the free chunks below. Only Dask's default
value is overridden: a threshold the site chose (any other value, exported or in its dask config)
is left as it is. Not on a glibc system (musl, macOS): nothing to do.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
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


#: a chunk this large freed in an arena makes glibc trim it (FASTBIN_CONSOLIDATION_THRESHOLD)
_TRIM_POKE = 64 * 1024
_pokes: dict[int, int] = {}   # thread id -> a _TRIM_POKE chunk from its arena, freed once all tasks end


@lru_cache(maxsize=1)
def _libc():
    """glibc (mallopt, malloc, free, malloc_trim), or None (another C library, or none found)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = (ctypes.c_size_t,)
        libc.free.argtypes = (ctypes.c_void_p,)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt():
    libc = _libc()
    return None if libc is None else libc.mallopt


#: seconds without a running task after which the heap gives back what tasks kept
GIVE_BACK_AFTER = 1.0
_idle_since: float | None = None     # when the last running task ended (None: one runs, or given back)
_timer: threading.Timer | None = None


def _leave_poke(libc) -> None:
    """A _TRIM_POKE chunk from this thread's arena, freed when the heap gives back (one a thread)."""
    if threading.get_ident() not in _pokes:
        chunk = libc.malloc(_TRIM_POKE)
        if chunk:
            _pokes[threading.get_ident()] = chunk


def _start_timer(seconds: float) -> None:
    global _timer
    _timer = threading.Timer(seconds, _give_back_if_idle)
    _timer.daemon = True
    _timer.start()


def _give_back_if_idle() -> None:
    """No task has run for GIVE_BACK_AFTER seconds: Dask's thresholds again, every task thread's
    arena trimmed, then the free chunks released. One timer at a time: tasks that ended since it
    started move it on."""
    global _timer, _idle_since, _restore
    with _lock:
        _timer = None
        if _running or _idle_since is None:   # a task runs: its end starts the timer again
            return
        left = _idle_since + GIVE_BACK_AFTER - time.monotonic()
        if left > 0:
            _start_timer(left)
            return
        _idle_since = None
        libc = _libc()
        if _restore is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _FIXED_MMAP)
            libc.mallopt(_M_TRIM_THRESHOLD, _restore)
            _restore = None
        for chunk in _pokes.values():
            libc.free(chunk)          # freed in its own arena: glibc trims that arena's top
        _pokes.clear()
        libc.malloc_trim(0)


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


#: glibc's other settings of the thresholds task_heap sets and sets back (their environment aliases)
_SITE_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_SITE_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad",
                  "glibc.malloc.mmap_max")


def _dask_trim_threshold() -> int | None:
    """The trim threshold this worker runs with when it is Dask's default, else None. Also None
    when the site set glibc's mmap threshold (or top pad, mmap count) itself: task_heap sets the
    mmap threshold back to glibc's 128 KB, which would replace the site's value for good."""
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if value is None or value != _dask_default():
        return None
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(v in os.environ for v in _SITE_MALLOC_VARIABLES) or any(t in tunables for t in _SITE_TUNABLES):
        return None
    try:
        from distributed import get_worker
        get_worker()          # a Dask worker's: the caller's own process is not ours to change
    except (ImportError, ValueError):
        return None
    return int(value)


@contextmanager
def task_heap():
    """Around one task's call: the heap keeps its freed memory until the worker has had no running
    task for GIVE_BACK_AFTER seconds (then _give_back_if_idle sets Dask's thresholds back)."""
    global _running, _restore, _idle_since
    with _lock:
        if _running == 0:
            _idle_since = None
            if _restore is None:             # not raised yet, or given back since
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
            if _restore is not None:
                _leave_poke(_libc())
                if _running == 0:
                    # the thresholds stay raised until the worker is idle: set back between two
                    # tasks, a trim of the arena's top would make the next task fault it all again
                    _idle_since = time.monotonic()
                    if _timer is None:
                        _start_timer(GIVE_BACK_AFTER)
