"""What Dask's malloc setting costs a find-faces task on a worker, and what resqmp.allocator saves.

Not part of the test suite. On one plain LocalCluster worker (Dask's nanny: MALLOC_TRIM_THRESHOLD_
=65536), the same find-faces tasks alternately through resqmp's run_task (task_heap: the heap
keeps freed arrays while a task runs) and through the bare wrapper (Dask's policy). Per task,
median after two unmeasured, each engine starting
from a worker idle long enough to have given its heap back: minor page faults (counted by the kernel, load-proof), the task
thread's CPU and the wall.

    .venv/bin/python bench/task_heap.py --tasks 40 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def measure(tasks: list[dict], tmp: str, through_resqmp: bool) -> dict:
    """Run on the worker: each task in a row; medians per task."""
    import os
    import resource
    import statistics
    import time
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as wrapper
    from resqmp.tasks import run_task
    faults, cpu, wall = [], [], []
    for k, kwargs in enumerate(tasks):
        f0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.thread_time(), time.perf_counter()
        if through_resqmp:
            record = run_task(wrapper, dict(kwargs), k, tmp)
            assert record["success"], record["error"]
        else:
            wrapper(index=k, parent_tmp_dir=tmp, **kwargs)
        if k >= 2:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
    return {"trim_env": os.environ.get("MALLOC_TRIM_THRESHOLD_"), "faults": statistics.median(faults),
            "cpu_ms": round(1000 * statistics.median(cpu), 2), "wall_ms": round(1000 * statistics.median(wall), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", default=str(HERE / "results"))
    args = parser.parse_args()
    import dataset
    from distributed import Client, LocalCluster
    from resqmp.allocator import GIVE_BACK_AFTER
    meta = dataset.build(Path(args.root), 1024)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client, tempfile.TemporaryDirectory() as tmp:
        client.submit(measure, meta["tasks"][:4], tmp, True, pure=False).result()     # imports, numba
        for r in range(args.rounds):
            for through in (False, True):
                time.sleep(2 * GIVE_BACK_AFTER)     # both start from a worker that gave its heap back
                m = client.submit(measure, meta["tasks"][:args.tasks], tmp, through, pure=False).result()
                print(json.dumps({"round": r, "engine": "run_task (task_heap)" if through else "bare wrapper (Dask's malloc)", **m}))


if __name__ == "__main__":
    main()
