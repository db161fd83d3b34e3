"""CPU of the launcher's merge alone: resqmp's Recombiner on N find-faces task outputs, in task
order, in this process, nothing else running in it.

Not part of the test suite. The task outputs are made once (in this process, one after another)
and kept under bench/results/tasks-N, so repeated runs measure the same files. Reported: CPU
seconds of this thread (time.thread_time) per task for the merges, the publish, and the total;
with --cprofile, the functions that cost most (cProfile, cumulative and own time). With
--check, the result is compared, entry for entry, with resqpy's own recombination of the same
files (slow: resqpy's loop is O(N²)).

    .venv/bin/python bench/merge_cpu.py --n 1024
    .venv/bin/python bench/merge_cpu.py --n 1024 --cprofile 25
    .venv/bin/python bench/merge_cpu.py --n 256 --check
    .venv/bin/python bench/merge_cpu.py --n 1024 --premerge 16   # workers' group partials first
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))


def task_outputs(root: Path, n: int) -> list[dict]:
    """Result records of the N find-faces tasks of the benchmark dataset; made once, then reused."""
    folder = root / f"tasks-{n}"
    index = folder / "results.json"
    if index.is_file():
        return json.loads(index.read_text())
    import dataset
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as wrapper
    from resqmp.execute import run_in_process
    meta = dataset.build(root, n)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    results: dict[int, dict] = {}
    run_in_process(wrapper, dict(enumerate(meta["tasks"])), str(folder), lambda r: results.__setitem__(r["index"], r))
    ordered = [results[i] for i in range(n)]
    assert all(r["success"] for r in ordered), [r["error"] for r in ordered if not r["success"]][:3]
    index.write_text(json.dumps(ordered))
    return ordered


def premerged(results: list[dict], size: int, folder: Path) -> tuple[list[dict], float]:
    """The records as workers hand them back with group partials of `size` tasks (resqmp.premerge),
    and the workers' CPU seconds for those partials (spent here, one group after another)."""
    import copy
    from resqmp.premerge import premerge_group
    folder.mkdir(parents=True)
    records = copy.deepcopy(results)
    t0 = time.thread_time()
    for k in range(0, len(records), size):
        premerge_group(records[k:k + size], str(folder))
    return records, time.thread_time() - t0


def recombine(results: list[dict], out: Path, task_directory: Path | None = None) -> dict:
    """task_directory: where premerged() wrote the group partials (read only there)."""
    from resqmp.recombine import Recombiner
    t0 = time.thread_time()
    recombiner = Recombiner(out, task_directory=task_directory)
    for r in results:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r.get("partial"))
    t1 = time.thread_time()
    recombiner.publish()
    t2 = time.thread_time()
    return {"merge_s": t1 - t0, "publish_s": t2 - t1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest is quoted (noise only adds)")
    parser.add_argument("--cprofile", type=int, default=0, metavar="K", help="print the K costliest functions")
    parser.add_argument("--callers", nargs="*", default=[], metavar="FUNC",
                        help="with --cprofile: also who calls these functions (pstats names, e.g. uuid_as_int)")
    parser.add_argument("--check", action="store_true", help="compare with resqpy's recombination, byte for byte")
    parser.add_argument("--root", default=str(HERE / "results"))
    parser.add_argument("--premerge", type=int, default=0, metavar="G",
                        help="merge from group partials of G tasks (made first, their CPU reported apart)")
    args = parser.parse_args(argv)
    from resqmp.worker_env import DEFAULTS, expanded_here
    os.environ.update(expanded_here(DEFAULTS))
    root = Path(args.root)
    results = task_outputs(root, args.n)
    n = len(results)
    runs = []
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        partials = Path(tmp) / "partials" if args.premerge else None
        if args.premerge:
            results, worker_s = premerged(results, args.premerge, partials)
            print(f"N={n}: group partials of {args.premerge}: {1000 * worker_s / n:.2f} ms/task of worker CPU")
        for k in range(args.repeat):
            runs.append(recombine(results, Path(tmp) / f"run{k}" / "out.epc", partials))
        best = min(runs, key=lambda r: r["merge_s"] + r["publish_s"])
        load = Path("/proc/loadavg").read_text().split()[0]
        print(f"N={n} merge {1000 * best['merge_s'] / n:.2f} ms/task, publish {best['publish_s']:.2f} s "
              f"({1000 * best['publish_s'] / n:.2f} ms/task), total {1000 * (best['merge_s'] + best['publish_s']) / n:.2f} "
              f"ms/task CPU (best of {len(runs)}; all: "
              + ", ".join(f"{1000 * (r['merge_s'] + r['publish_s']) / n:.2f}" for r in runs) + f"); load {load}")
        if args.cprofile:
            import cProfile
            import pstats
            prof = cProfile.Profile(time.thread_time)
            prof.enable()
            recombine(results, Path(tmp) / "profiled" / "out.epc", partials)
            prof.disable()
            stats = pstats.Stats(prof)
            stats.sort_stats("cumulative").print_stats(args.cprofile)
            stats.sort_stats("tottime").print_stats(args.cprofile)
            if args.callers:
                for name in args.callers:
                    stats.print_callers(name)
        if args.check:
            from test_recombine import assert_identical, resqpy_recombine
            ref = Path(tmp) / "ref" / "out.epc"
            ref.parent.mkdir()
            resqpy_recombine(results, ref)
            assert_identical(Path(tmp) / "run0" / "out.epc", ref)
            print(f"N={n}: identical to resqpy's recombination (every EPC entry and HDF5 dataset)")
    with open(root / "merge_cpu.jsonl", "a") as f:
        f.write(json.dumps({"n": n, "runs": runs, "load": load, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
