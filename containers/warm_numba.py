"""Fill the numba cache of the resqpy wrappers at image build time.

resqpy compiles its numba functions with cache=True when RESQPY_NUMBA_CACHE=true; the first
find-faces call in a fresh interpreter otherwise pays 5-8 s of JIT. This script runs each wrapper
(find faces with the default and with all optional return properties, meshes from column
properties, blocked wells) once on the synthetic example model, in this process, so that
NUMBA_CACHE_DIR holds every specialisation those paths need. It refuses to run without the cache
settings, so a build cannot silently bake an empty cache.

    python warm_numba.py [--check]

--check runs one find-faces task and prints one JSON line: its seconds and what numba did
(resqmp.numba_stats: cache hits and misses of resqpy's functions; a miss is a compile).
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

FIND_FACES_PROPERTIES = ["triangle", "depth", "offset", "grid bisector", "grid shadow"]


def _tasks(batch_path: Path):
    """(wrapper, kwargs list) of a batch file written by resqmp.example, paths resolved."""
    import yaml
    import resqpy.multi_processing as rqmp

    doc = yaml.safe_load(batch_path.read_text())
    wrapper = getattr(rqmp, doc["wrapper"] + "_wrapper")
    accepted = set(inspect.signature(wrapper).parameters)
    out = []
    for task in doc["tasks"]:
        kwargs = {**(doc.get("defaults") or {}), **task}
        kwargs = {k: (str(batch_path.parent / v) if k.endswith("_epc") else v) for k, v in kwargs.items()}
        out.append({k: v for k, v in kwargs.items() if k in accepted})
    return wrapper, out


def _run(wrapper, kwargs: dict, index: int, tmp: Path) -> float:
    t0 = time.perf_counter()
    result = wrapper(index=index, parent_tmp_dir=str(tmp), **kwargs)
    if not result[1]:
        raise SystemExit(f"warm_numba: {wrapper.__name__} task {index} failed: {result}")
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    check = "--check" in argv
    cache_on = os.environ.get("RESQPY_NUMBA_CACHE", "").lower()[:1] == "t" and os.environ.get("NUMBA_CACHE_DIR")
    if not check and not cache_on:
        raise SystemExit("warm_numba: set RESQPY_NUMBA_CACHE=true and NUMBA_CACHE_DIR")
    from resqmp.example import write_example

    with tempfile.TemporaryDirectory(prefix="resqmp-warm-") as tmp:
        tmp = Path(tmp)
        ex = write_example(tmp / "model", surfaces=2, wells=1, mesh_properties=1)
        wrapper, tasks = _tasks(Path(ex["batch"]))
        if check:
            from resqmp.numba_stats import resqpy_numba_stats
            seconds = _run(wrapper, tasks[0], 0, tmp / "tasks")
            print(json.dumps({"first find-faces task (s)": round(seconds, 3), **resqpy_numba_stats()}))
            return 0
        index = 0
        for variant in (None, FIND_FACES_PROPERTIES):
            for kwargs in tasks:
                if variant:
                    # raw: the example faults end inside the grid, so their face sets are leaky
                    kwargs = {**kwargs, "return_properties": variant, "raw_bisector": True}
                seconds = _run(wrapper, kwargs, index, tmp / "tasks")
                print(f"find faces {index} (return_properties={variant}): {seconds:.2f} s", flush=True)
                index += 1
        for key in ("batch_mesh", "batch_wells"):
            wrapper, tasks = _tasks(Path(ex[key]))
            for kwargs in tasks:
                seconds = _run(wrapper, kwargs, index, tmp / "tasks")
                print(f"{wrapper.__name__} {index}: {seconds:.2f} s", flush=True)
                index += 1
    files = sum(len(f) for _, _, f in os.walk(os.environ["NUMBA_CACHE_DIR"]))
    print(f"numba cache {os.environ['NUMBA_CACHE_DIR']}: {files} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
