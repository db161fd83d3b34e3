"""What numba did for resqpy in this process: which compiled functions came from the on-disk cache
and which were compiled here.

A stopwatch cannot tell a cache hit from a fast JIT (a quick machine compiles the find-faces path
in 2 s, a loaded one loads it from the cache in as long), but numba counts both: every
``Dispatcher.compile`` of a signature either loads it from the cache (``stats.cache_hits``) or
compiles it (``stats.cache_misses``; always a miss when caching is off). resqpy's numba functions
are module-level dispatchers, all made by ``resqpy.olio.numba_compat.njit``, so the resqpy modules
imported in this process hold every one of them.

    resqpy_numba_stats()   # in a worker: client.run(resqpy_numba_stats), or at a task's end
"""
from __future__ import annotations

import os
import sys

__all__ = ["resqpy_numba_stats", "resqpy_dispatchers"]


def resqpy_dispatchers() -> dict[str, object]:
    """'module.function' -> numba dispatcher, for each one found in the imported resqpy modules."""
    if "numba" not in sys.modules:
        return {}                       # numba never imported: nothing compiled or loaded
    from numba.core.dispatcher import Dispatcher
    found: dict[int, tuple[str, object]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "resqpy" or name.startswith("resqpy.")):
            continue
        for value in list(vars(module).values()):
            # the same dispatcher is imported into other modules: keep the name of its definition
            if isinstance(value, Dispatcher) and id(value) not in found:
                found[id(value)] = (f"{value.py_func.__module__}.{value.py_func.__qualname__}", value)
    return dict(found.values())


def resqpy_numba_stats() -> dict:
    """Cache hits and misses of resqpy's numba functions in this process so far.

    returns a dict: ``cache_hits`` and ``cache_misses`` (signatures loaded from the cache /
    compiled in this process, summed over resqpy's functions), ``loaded`` and ``compiled`` (the
    names of the functions with a hit / a miss), ``cache_enabled`` (resqpy asked numba to cache:
    ``RESQPY_NUMBA_CACHE`` when resqpy was imported; None if it was not), ``cache_dir``
    (``NUMBA_CACHE_DIR`` as numba read it), ``pid``.
    """
    hits = misses = 0
    loaded, compiled = [], []
    for name, dispatcher in sorted(resqpy_dispatchers().items()):
        stats = dispatcher.stats
        h, m = sum(stats.cache_hits.values()), sum(stats.cache_misses.values())
        hits, misses = hits + h, misses + m
        if h:
            loaded.append(name)
        if m:
            compiled.append(name)
    compat = sys.modules.get("resqpy.olio.numba_compat")
    numba = sys.modules.get("numba")
    return {"cache_hits": hits, "cache_misses": misses, "loaded": loaded, "compiled": compiled,
            "cache_enabled": bool(compat.ENABLE_NUMBA_CACHE) if compat else None,
            "cache_dir": (numba.config.CACHE_DIR or None) if numba else None, "pid": os.getpid()}
