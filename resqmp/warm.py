"""Fill resqpy's numba cache once, before a batch, so no worker pays the JIT on its first task.

resqpy compiles its numba functions with ``cache=True`` when ``RESQPY_NUMBA_CACHE`` is true (the
worker environment sets it, with ``NUMBA_CACHE_DIR`` on a persistent, writable directory). A cold
worker then spends 5–8 s compiling the find-faces path before its first task, and several worker
processes filling one cache at once has crashed numba (numba#4807). So: run
``warm_numba_cache()`` in ONE worker first (``client.submit(warm_numba_cache,
workers=[first]).result()``); every worker afterwards loads the compiled code from the cache.

The warm-up runs the three resqpy wrappers resqmp ships batches for (find faces, mesh from a
column property, blocked well from a trajectory) on a tiny synthetic model in a temporary folder,
in the calling process, with the argument types real batches use, so the same specialisations are
compiled. resqmp's own find-faces wrapper (resqmp.wrappers) is covered by the find-faces
warm-up: the only numba code it reaches is what resqpy's regular wrapper compiles (``label_for``).
A lock file in the cache directory keeps two warm-ups (say, on two nodes sharing the
cache) from compiling into it at the same time; the second one then finds the cache filled.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

__all__ = ["warm_numba_cache", "warm_workers", "warm_users_cluster", "cache_location", "label_for", "WRAPPERS"]

#: wrapper label -> batch key of resqmp.example.write_example
WRAPPERS = {"find_faces": "batch", "mesh": "batch_mesh", "blocked_well": "batch_wells"}

#: modules whose wrappers these warm-ups cover: resqpy's, and resqmp's own (resqmp.wrappers), whose
#: find-faces wrapper reaches numba only on an aligned RegularGrid, through the same
#: regular_optimised code resqpy's regular wrapper compiles (on a corner-point grid it runs resqpy's
#: numpy-only 'staffa' method: nothing to compile)
COVERED_MODULES = ("resqpy.", "resqmp.wrappers")


def label_for(wrapper: str) -> str | None:
    """The WRAPPERS label whose warm-up compiles what a batch's wrapper ("module:function") runs
    through numba; None for a wrapper resqmp knows nothing about."""
    module = wrapper.partition(":")[0]
    if not any(module == m or module.startswith(m) for m in COVERED_MODULES):
        return None
    return next((label for label in WRAPPERS if label in wrapper), None)


@contextlib.contextmanager
def _cache_lock(cache_dir: str | None, timeout: float = 600.0):
    """An exclusive lock on <cache_dir>/.resqmp-warm.lock (no-op where locking is unavailable)."""
    if not cache_dir:
        yield 0.0
        return
    start = time.perf_counter()
    try:
        import fcntl
        os.makedirs(cache_dir, exist_ok=True)
        fd = os.open(os.path.join(cache_dir, ".resqmp-warm.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        yield 0.0
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break            # go on unlocked rather than never warming
                time.sleep(0.2)
            except OSError:
                break                # e.g. a filesystem without flock: go on unlocked
        yield time.perf_counter() - start
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(fd)


def _cache_files(cache_dir: str | None) -> int:
    if not cache_dir or not os.path.isdir(cache_dir):
        return 0
    return sum(1 for _, _, files in os.walk(cache_dir) for f in files if f.endswith((".nbi", ".nbc")))


def warm_numba_cache(wrappers=tuple(WRAPPERS), tmp_dir: str | None = None) -> dict:
    """Run each wrapper once on a tiny model in this process; return what it cost.

    arguments:
        wrappers: labels from WRAPPERS to run (default all three)
        tmp_dir: where to build the tiny model (default: the system temporary folder)

    returns a dict: ``cache_enabled`` (resqpy will use the numba cache), ``cache_dir``,
    ``seconds`` (label -> seconds of that wrapper's first call), ``model_seconds``,
    ``lock_wait_seconds``, ``total_seconds``, ``cache_files_before``/``_after`` (index and data
    files in the cache directory), ``host``, ``pid``. A wrapper that fails is reported under
    ``errors`` (label -> message) rather than raised: warming is an optimisation.
    """
    start = time.perf_counter()
    unknown = set(wrappers) - set(WRAPPERS)
    if unknown:
        raise ValueError(f"unknown wrapper(s) {sorted(unknown)}; expected some of {sorted(WRAPPERS)}")
    import numba
    cache_dir = numba.config.CACHE_DIR or None
    files_before = _cache_files(cache_dir)
    t = time.perf_counter()
    import resqpy.olio.numba_compat as numba_compat
    import resqpy.multi_processing  # noqa: F401 - the wrappers and the numba functions they use
    from resqmp.batch import load
    from resqmp.example import write_example
    result = {"cache_enabled": bool(numba_compat.ENABLE_NUMBA_CACHE), "cache_dir": cache_dir,
              "host": socket.gethostname(), "pid": os.getpid(), "seconds": {}, "errors": {},
              "import_seconds": round(time.perf_counter() - t, 3), "cache_files_before": files_before}
    with _cache_lock(cache_dir if result["cache_enabled"] else None) as waited:
        result["lock_wait_seconds"] = round(waited, 3)
        with tempfile.TemporaryDirectory(prefix="resqmp-warm-", dir=tmp_dir) as tmp:
            t = time.perf_counter()
            # small, but big enough that find-faces takes its ordinary (non-degenerate) path
            example = write_example(Path(tmp) / "model", surfaces=1, wells=1, mesh_properties=1,
                                    extent_kji=(4, 8, 8))
            result["model_seconds"] = round(time.perf_counter() - t, 3)
            for label in wrappers:
                batch = load(example[WRAPPERS[label]])
                kwargs = dict(batch.tasks[0])       # the loader already dropped unaccepted keys
                run_dir = Path(tmp) / f"run-{label}"
                run_dir.mkdir()
                t = time.perf_counter()
                try:
                    _, success, _, _ = batch.function(index=0, parent_tmp_dir=str(run_dir), **kwargs)
                    if not success:
                        result["errors"][label] = "wrapper reported no success"
                except Exception as e:   # noqa: BLE001 - report, do not fail the batch over warming
                    result["errors"][label] = f"{type(e).__name__}: {e}"
                result["seconds"][label] = round(time.perf_counter() - t, 3)
        result["cache_files_after"] = _cache_files(cache_dir)
    result["total_seconds"] = round(time.perf_counter() - start, 3)
    return result


def warm_workers(client, wrappers=tuple(WRAPPERS)) -> dict:
    """Warm the cache on one worker, then every other worker (which then only loads from the
    cache, and has resqpy imported before its first task). Returns worker address -> result.

    The first worker fills the cache alone; the others start after it, and the lock file
    serialises any that would still compile. Workers that join later are not covered (they load
    from the filled cache on their first task, paying only resqpy's import).
    """
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        return {}
    first = workers[0]
    results = {first: client.submit(warm_numba_cache, tuple(wrappers), workers=[first], pure=False,
                                    allow_other_workers=False).result()}
    rest = workers[1:]
    if rest:
        results.update(client.run(warm_numba_cache, tuple(wrappers), workers=rest))
    return results


#: labels already warmed in this (worker) process: the drop-in warms a worker once, not per call
_warmed: set[str] = set()


def use_numba_cache() -> dict:
    """Run on a worker resqmp did not start: turn resqpy's numba cache on, as resqmp's own workers
    have it (worker_env.DEFAULTS), when nothing decided it yet (no RESQPY_NUMBA_CACHE in the
    worker's environment), with a writable cache directory (numba fails every cached function
    when it cannot write its cache): NUMBA_CACHE_DIR, or the directory the user gave an imported
    numba in code (numba.config.CACHE_DIR), else ~/.cache/resqmp/numba.

    Also when the worker imported resqpy before this (a user's script that imports it at the top
    is imported again by every worker the cluster spawns): its functions were made without a
    cache, and get one now, as numba's own ``cache=True`` gives it (``enable_caching``), and so do
    resqpy's modules imported later. Without this, every worker of every new cluster compiled all
    of resqpy's numba code in memory, 5–8 s each. An imported numba is given the directory as a
    setting made in code (numba.config.CACHE_DIR), never through the environment: a NUMBA_
    variable added to it makes numba reread all of its settings at its next compilation, which
    drops those the user made in code and raises "Cannot set NUMBA_NUM_THREADS to a different
    value once the threads have been launched" in a worker pinned to fewer cores since.

    Returns ``changed``; ``compiled_in_memory``: resqpy functions compiled here before the cache
    was on (numba never writes those to it), other than those compiled where they are defined."""
    import sys
    from resqmp.worker_env import DEFAULTS, expand
    compat = sys.modules.get("resqpy.olio.numba_compat")
    if "RESQPY_NUMBA_CACHE" in os.environ or (compat is not None and compat.ENABLE_NUMBA_CACHE):
        return {"changed": False}
    numba = sys.modules.get("numba")
    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or (numba.config.CACHE_DIR if numba is not None else "")
    if not cache_dir:
        cache_dir = expand(DEFAULTS["NUMBA_CACHE_DIR"], os.environ)
        try:
            os.makedirs(cache_dir, exist_ok=True)
        except OSError:
            return {"changed": False}
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            return {"changed": False}
        if numba is None:
            os.environ["NUMBA_CACHE_DIR"] = cache_dir     # read by numba when it is imported
        else:
            numba.config.CACHE_DIR = cache_dir
    os.environ["RESQPY_NUMBA_CACHE"] = "true"
    in_memory = []
    if compat is not None:
        from resqmp.numba_stats import resqpy_dispatchers
        compat.ENABLE_NUMBA_CACHE = True          # read by resqpy's njit as each module is imported
        for name, dispatcher in resqpy_dispatchers().items():
            # one compiled where it is defined (a signature in its decorator) is compiled so in
            # every worker that imports resqpy: none compiles it later, into the cache or not
            if dispatcher.overloads and getattr(dispatcher, "_can_compile", True):
                in_memory.append(name)
            dispatcher.enable_caching()
    return {"changed": True, "cache_dir": cache_dir, "compiled_in_memory": in_memory}


def warm_once(wrappers=tuple(WRAPPERS)) -> dict:
    """warm_numba_cache for the labels this process has not warmed yet ({} when none is left)."""
    todo = tuple(label for label in wrappers if label not in _warmed)
    if not todo:
        return {}
    result = warm_numba_cache(todo)
    _warmed.update(todo)
    return result


def cache_location() -> tuple[str, str | None] | None:
    """Run on a worker: where resqpy's numba functions are cached there, as (host, the cache
    directory or None for numba's default beside the sources); None when resqpy's cache is off
    (each worker then compiles in memory: nothing shared to fill, nothing to collide in)."""
    import sys
    compat = sys.modules.get("resqpy.olio.numba_compat")
    enabled = (compat.ENABLE_NUMBA_CACHE if compat is not None
               else os.environ.get("RESQPY_NUMBA_CACHE", "false").lower().startswith("t"))
    if not enabled:
        return None
    numba = sys.modules.get("numba")
    cache_dir = numba.config.CACHE_DIR if numba is not None else os.environ.get("NUMBA_CACHE_DIR")
    return socket.gethostname(), os.path.realpath(cache_dir) if cache_dir else None


def warm_users_cluster(client, wrapper: str) -> dict:
    """The drop-in on a cluster the user started: before the batch, every worker connected now
    uses resqpy's numba cache (use_numba_cache), and one runs the batch's wrapper once on a tiny
    model, filling the cache, once per worker process. The others load that cache on their first
    task, while the first already runs the batch: warming them first made every worker wait for
    each import in turn (1–1.5 s each). The one warmed first is a worker that compiled none of
    resqpy's code in memory before its cache was on (numba writes to the cache only what it
    compiles with the cache on). The others are warmed before the batch too, taking turns on the
    cache (the lock), where the first did not fill their cache: on another host or in another
    cache directory, after a warm-up that failed, or when every worker had compiled in memory.
    So no two workers compile into one cache at once (numba#4807). Nothing for a wrapper resqmp
    knows nothing about (label_for). Returns worker address -> warm_once's result, for the
    workers warmed."""
    label = label_for(wrapper)
    workers = sorted(client.scheduler_info()["workers"])
    if label is None or not workers:
        return {}
    prepared = client.run(use_numba_cache, workers=workers)
    clean = [w for w in workers if not prepared.get(w, {}).get("compiled_in_memory")]
    first = clean[0] if clean else workers[0]
    rest = [w for w in workers if w != first]
    results = {first: client.submit(warm_once, (label,), workers=[first], allow_other_workers=False,
                                    pure=False).result()}
    if rest:
        where = client.run(cache_location, workers=workers)
        # a failed warm-up may have left the cache half-filled; one that found resqpy compiled in
        # memory wrote none of that
        filled = not results[first].get("errors") and first in clean
        unfilled = [w for w in rest if where.get(w) is not None and (where[w] != where.get(first) or not filled)]
        if unfilled:        # they compile into caches of their own, taking turns on each (the lock)
            results.update(client.run(warm_once, (label,), workers=unfilled))
    return results


if __name__ == "__main__":      # python -m resqmp.warm
    import json
    print(json.dumps(warm_numba_cache(), indent=2))
