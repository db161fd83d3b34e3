"""Benchmark: resqpy's function_multiprocessing vs resqmp on the same LocalCluster shape.

Not part of the test suite. Runs find-faces on N fault surfaces crossing a 20x50x50 grid
(bench/dataset.py), each engine on a fresh LocalCluster of 2 single-threaded worker processes
with the worker environment resqmp uses (numba cache on, one numba thread, no HDF5 locking), whose
workers are warmed first (resqmp.warm.warm_workers) so neither pays numba's JIT:

  resqpy   resqpy.multi_processing.function_multiprocessing(..., cluster)  (joblib's dask backend)
  resqmp   resqmp.api.function_multiprocessing(..., cluster)               (the drop-in)
  launch   `resqmp launch --profile local --workers 2` on a batch file, as a user runs it
           (starts its own cluster and warms it; startup reported apart from the run)
  recombine  recombination alone, in this process, on one set of task files: resqpy's loop,
           then resqmp's Recombiner, each without workers competing for the CPU
  plain    the way users run it (resqpy's tutorial): a plain LocalCluster(n_workers=2,
           threads_per_worker=1) started with NO resqmp environment (no numba cache, numba's
           default threads) and no warm-up, handed to resqpy's function_multiprocessing and then,
           on a second fresh plain cluster, to resqmp's drop-in; prints both walls, the ratio and
           the physical floor (one task's warm single-thread CPU in this process x N / cores)
  plain-resqmp  the drop-in alone on a fresh plain cluster (compare two commits of resqmp back to
           back: `PYTHONPATH=<other checkout>` for the other one)

Printed per run: wall seconds (cluster start excluded for resqpy/resqmp, reported apart), the
sum of task compute seconds (resqmp modes), recombination seconds and ms per task, time to the
first result merged into the output model, and whether resqpy's and resqmp's outputs hold the same
parts (by type and title) and the same face counts per connection set.

    .venv/bin/python bench/bench.py --n 1024                   # one N, resqpy and resqmp
    .venv/bin/python bench/bench.py --scaling 256,512,1024,2048 --modes resqpy,resqmp,launch
    .venv/bin/python bench/bench.py --n 256 --modes resqmp     # only resqmp
    .venv/bin/python bench/bench.py --n 1024 --modes plain     # the users' way, with the floor
    .venv/bin/python bench/bench.py --n 1024 --modes plain-resqmp

Results are appended as JSON lines to bench/results/bench.jsonl (datasets are cached there too).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import dataset  # noqa: E402
from epc_compare import content  # noqa: E402 - parts by (type, title), faces per connection set
from resqmp.backends.local import use_worker_environment  # noqa: E402
from resqmp.worker_env import DEFAULTS, expanded_here  # noqa: E402

WORKER_ENV = expanded_here(DEFAULTS)     # resqmp's worker environment, as the local profile sets it
_worker_env_set = False                  # main() sets it in this process, except for `plain`


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 1024 ** 2, 1)
    except OSError:
        pass
    import dask
    import distributed
    import h5py
    import numba
    import resqpy
    info.update(resqpy=resqpy.__version__, dask=dask.__version__, distributed=distributed.__version__,
                numba=numba.__version__, h5py=h5py.__version__, hdf5=h5py.version.hdf5_version)
    return info


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def start_cluster(workers: int):
    from distributed import Client, LocalCluster
    use_worker_environment(WORKER_ENV)
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)             # the default client: joblib's dask backend uses it
    client.wait_for_workers(workers)
    return cluster, client, time.perf_counter() - t


def warm(client) -> float:
    from resqmp.warm import warm_workers
    t = time.perf_counter()
    warm_workers(client, wrappers=("find_faces",))
    return time.perf_counter() - t


def first_task_per_worker(records) -> dict:
    """Seconds of each worker's first task (lowest index it ran)."""
    first = {}
    for r in sorted(records, key=lambda r: r["index"]):
        if r.get("worker") and r["worker"] not in first:
            first[r["worker"]] = r["seconds"]
    return first


def run_resqpy(meta: dict, out_dir: Path, workers: int) -> dict:
    import resqpy.model as rq
    import resqpy.multi_processing as rqmp
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as wrapper

    out = out_dir / "resqpy.epc"
    cluster, client, start_s = start_cluster(workers)
    try:
        warm_s = warm(client)
        marks = {}
        original = rq.Model.copy_uuid_from_other_model

        def timed_copy(self, *args, **kwargs):     # first call: the first result starts merging
            marks.setdefault("first_merge", time.perf_counter())
            return original(self, *args, **kwargs)

        rq.Model.copy_uuid_from_other_model = timed_copy
        kwargs_list = [dict(t) for t in meta["tasks"]]
        t0 = time.perf_counter()
        try:
            success = rqmp.function_multiprocessing(wrapper, kwargs_list, str(out), cluster,
                                                    tmp_dir_path=str(out_dir))
        finally:
            rq.Model.copy_uuid_from_other_model = original
        wall = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    first = marks.get("first_merge", t0 + wall)
    recombine = t0 + wall - first       # from the first copy to the stored EPC
    return {"engine": "resqpy", "wall_s": wall, "cluster_start_s": start_s, "warm_s": warm_s,
            "recombine_s": recombine, "first_result_s": first - t0, "succeeded": sum(map(bool, success)),
            "output": str(out)}


def run_resqmp(meta: dict, out_dir: Path, workers: int) -> dict:
    import resqmp.api as api
    from resqmp import recombine
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as wrapper

    out = out_dir / "resqmp.epc"
    cluster, client, start_s = start_cluster(workers)
    records, marks, recombiners = [], {}, []
    original_run, original_init = api.run_on_client, recombine.Recombiner.__init__

    def capturing_run(client, function, by_index, run_dir, on_result, **kw):
        def on(result):
            records.append(result)
            on_result(result)
        marks["group_size"] = original_run(client, function, by_index, run_dir, on, **kw)
        return marks["group_size"]

    def capturing_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        recombiners.append(self)
        merge = self._merge

        def timed_merge(*a, **k):               # first return: the first result is merged
            merge(*a, **k)
            marks.setdefault("first_merged", time.perf_counter())
        self._merge = timed_merge

    try:
        warm_s = warm(client)
        api.run_on_client = capturing_run
        recombine.Recombiner.__init__ = capturing_init
        kwargs_list = [dict(t) for t in meta["tasks"]]
        t0 = time.perf_counter()
        success = api.function_multiprocessing(wrapper, kwargs_list, str(out), client, tmp_dir_path=str(out_dir))
        wall = time.perf_counter() - t0
    finally:
        api.run_on_client, recombine.Recombiner.__init__ = original_run, original_init
        client.close()
        cluster.close()
    return {"engine": "resqmp", "wall_s": wall, "first_task_s": first_task_per_worker(records), "cluster_start_s": start_s, "warm_s": warm_s,
            "recombine_s": recombiners[0].seconds if recombiners else None,
            "first_result_s": marks.get("first_merged", t0 + wall) - t0,
            "task_s": sum(r["seconds"] or 0 for r in records), "succeeded": sum(map(bool, success)),
            "group_size": marks.get("group_size"), "output": str(out)}


def run_launch(meta: dict, out_dir: Path, workers: int) -> dict:
    import yaml
    batch = out_dir / "batch.yaml"
    common = {k: v for k, v in meta["tasks"][0].items() if k in ("grid_epc", "grid_uuid", "use_index_as_realisation",
                                                                 "n_threads")}
    tasks = [{k: v for k, v in t.items() if k not in common} for t in meta["tasks"]]
    batch.write_text(yaml.safe_dump({"wrapper": "find_faces_to_represent_surface_regular", "defaults": common,
                                     "tasks": tasks}, sort_keys=False))
    out = out_dir / "launch.epc"
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "resqmp"), "launch", "--profile", "local",
                           "--workers", str(workers), "--batch", str(batch), "--output", str(out)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"resqmp launch exited {proc.returncode}: {proc.stderr[-2000:]}")
    report = json.loads(out.with_name("launch.report.json").read_text())
    phases = report.get("phase_seconds", {})
    # getting workers ready: the cluster object, the first worker process, the numba warm-up
    startup = sum(phases.get(k) or 0.0 for k in ("cluster_start", "first_worker", "warm"))
    return {"engine": "launch", "wall_s": wall, "report_wall_s": report.get("wall_seconds"),
            "first_task_s": first_task_per_worker(report["tasks"]),
            "cluster_start_s": startup, "phases": phases, "recombine_s": report.get("recombine_seconds"),
            "task_s": report["totals"]["task_seconds"], "succeeded": report["totals"]["succeeded"],
            "group_size": report.get("group_size"), "output": str(out)}


def run_recombine_only(meta: dict, out_dir: Path, workers: int) -> dict:
    """Recombination alone, in this process, on the same task files: resqpy's loop (as in
    function_multiprocessing) then resqmp's Recombiner, each timed per task without workers
    competing for the CPU."""
    import resqpy.model as rq
    import resqpy.olio.consolidation as cons
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as wrapper
    from resqmp.execute import run_on_client
    from resqmp.recombine import Recombiner

    task_dir = out_dir / "tasks"
    task_dir.mkdir()
    cluster, client, _ = start_cluster(workers)
    results = {}
    try:
        warm(client)
        run_on_client(client, wrapper, dict(enumerate(meta["tasks"])), str(task_dir),
                      lambda r: results.__setitem__(r["index"], r))
    finally:
        client.close()
        cluster.close()
    ordered = [results[i] for i in range(len(results))]
    n = len(ordered)

    def quarters(times):
        q = max(1, n // 4)
        return 1000 * sum(times[:q]) / q, 1000 * sum(times[-q:]) / q

    (out_dir / "ref").mkdir()
    times = []
    t0 = time.perf_counter()
    model = rq.new_model(str(out_dir / "ref" / "out.epc"), quiet=True)
    for r in ordered:
        t = time.perf_counter()
        task_model = rq.Model(epc_file=r["epc_file"], quiet=True)
        for u in cons.sort_uuids_list(task_model, r["uuid_list"]):
            model.copy_uuid_from_other_model(task_model, uuid=u, consolidate=True)
        times.append(time.perf_counter() - t)
    model.store_epc(quiet=True)
    model.h5_release()
    resqpy_s = time.perf_counter() - t0
    resqpy_q = quarters(times)

    (out_dir / "ours").mkdir()
    times = []
    t0 = time.perf_counter()
    recombiner = Recombiner(out_dir / "ours" / "out.epc")
    for r in ordered:
        t = time.perf_counter()
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    recombiner.publish()
    publish_s = time.perf_counter() - t
    resqmp_s = time.perf_counter() - t0
    resqmp_q = quarters(times)
    same = content(out_dir / "ours" / "out.epc") == content(out_dir / "ref" / "out.epc")
    print(f"N={n} recombine-only: resqpy {1000 * resqpy_s / n:.2f} ms/task (first/last quarter "
          f"{resqpy_q[0]:.1f}/{resqpy_q[1]:.1f}), resqmp {1000 * resqmp_s / n:.2f} ms/task (first/last quarter "
          f"{resqmp_q[0]:.1f}/{resqmp_q[1]:.1f}, publish {publish_s:.2f} s), same content {same}", flush=True)
    return {"engine": "recombine", "wall_s": resqmp_s, "recombine_s": resqmp_s, "resqpy_recombine_s": resqpy_s,
            "resqpy_quarters_ms": resqpy_q, "resqmp_quarters_ms": resqmp_q, "publish_s": publish_s,
            "same_content": same, "output": str(out_dir / "ours" / "out.epc")}


@contextlib.contextmanager
def plain_cluster(workers: int):
    """LocalCluster(n_workers, threads_per_worker=1) as a user's script makes it: workers spawned
    with the user's environment and dask's default config, not resqmp's (nothing warmed). This
    process must not have set resqmp's worker environment (main() leaves it out for `plain`)."""
    from distributed import Client, LocalCluster
    assert not _worker_env_set, "plain mode runs in a process without resqmp's worker environment"
    try:
        t = time.perf_counter()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)        # the default client: joblib's dask backend uses it
        client.wait_for_workers(workers)
        start_s = time.perf_counter() - t
        env = client.run(lambda: {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "RESQPY_NUMBA_CACHE",
                                                                     "OMP_NUM_THREADS")})
        yield cluster, client, start_s, next(iter(env.values()))
    finally:
        client.close()
        cluster.close()


def task_floor(root: Path, n: int, repeats: int = 15) -> float:
    """CPU seconds of one find-faces task, warm, one thread: median over `repeats` tasks after two
    unmeasured ones, in a fresh process with one numba thread and the numba cache on (process
    CPU, so numba's own threads would count): the cost no engine can avoid."""
    proc = subprocess.run([sys.executable, __file__, "--floor-child", "--n", str(n), "--root", str(root)],
                          capture_output=True, text=True, env={**os.environ, **WORKER_ENV}, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def floor_child(root: Path, n: int, repeats: int = 15) -> None:
    import resource
    import statistics
    import tempfile
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as wrapper
    meta = dataset.build(root, n)

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats + 2):
            kwargs = dict(meta["tasks"][k % len(meta["tasks"])])
            t = cpu()
            wrapper(index=k, parent_tmp_dir=tmp, **kwargs)
            if k >= 2:
                times.append(cpu() - t)
    print(statistics.median(times))


def run_plain(meta: dict, out_dir: Path, workers: int, engines=("resqpy", "resqmp")) -> dict:
    """Both engines, each on its own fresh plain LocalCluster, resqpy first (`plain-resqmp`: the
    drop-in alone, to compare two commits of resqmp without waiting on resqpy each time)."""
    import resqpy.multi_processing as rqmp
    import resqmp.api as api
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as wrapper
    n = len(meta["tasks"])
    walls, starts = {}, {}
    for engine, function_multiprocessing in (("resqpy", rqmp.function_multiprocessing),
                                             ("resqmp", api.function_multiprocessing)):
        if engine not in engines:
            continue
        with plain_cluster(workers) as (cluster, client, start_s, worker_env):
            kwargs_list = [dict(t) for t in meta["tasks"]]
            t0 = time.perf_counter()
            success = function_multiprocessing(wrapper, kwargs_list, str(out_dir / f"plain-{engine}.epc"), cluster,
                                               tmp_dir_path=str(out_dir))
            walls[engine], starts[engine] = time.perf_counter() - t0, start_s
            assert all(success), f"{engine}: {success.count(False)} tasks failed"
    if "resqpy" not in engines:
        print(f"N={n} plain LocalCluster({workers} workers, no resqmp environment: {worker_env}): "
              f"resqmp drop-in {walls['resqmp']:.2f} s; cluster start {starts['resqmp']:.1f} s", flush=True)
        return {"engine": "plain-resqmp", "wall_s": walls["resqmp"], "worker_env": worker_env,
                "cluster_start_s": starts, "output": str(out_dir / "plain-resqmp.epc")}
    floor_task_s = task_floor(out_dir.parent, n)
    floor = floor_task_s * n / (os.cpu_count() or workers)
    same = content(out_dir / "plain-resqmp.epc") == content(out_dir / "plain-resqpy.epc")
    ratio = walls["resqmp"] / walls["resqpy"]
    print(f"N={n} plain LocalCluster({workers} workers, no resqmp environment: {worker_env}): "
          f"resqpy {walls['resqpy']:.2f} s, resqmp drop-in {walls['resqmp']:.2f} s, ratio {ratio:.3f}; "
          f"floor {floor:.2f} s ({1000 * floor_task_s:.1f} ms CPU per task x {n} / {os.cpu_count()} cores; "
          f"floor/resqpy {floor / walls['resqpy']:.3f}); resqmp/floor {walls['resqmp'] / floor:.2f}; "
          f"same output {same}; cluster start {starts['resqpy']:.1f} / {starts['resqmp']:.1f} s", flush=True)
    return {"engine": "plain", "wall_s": walls["resqmp"], "resqpy_wall_s": walls["resqpy"], "ratio_to_resqpy": ratio,
            "floor_s": floor, "floor_task_cpu_s": floor_task_s, "worker_env": worker_env,
            "cluster_start_s": starts, "same_output_as_resqpy": same, "output": str(out_dir / "plain-resqmp.epc")}


RUNNERS = {"resqpy": run_resqpy, "resqmp": run_resqmp, "launch": run_launch, "recombine": run_recombine_only,
           "plain": run_plain,
           "plain-resqmp": lambda meta, out_dir, workers: run_plain(meta, out_dir, workers, engines=("resqmp",))}


def bench_one(n: int, modes: list[str], root: Path, workers: int, layout: str) -> list[dict]:
    meta = dataset.build(root, n, layout=layout)
    run_dir = root / f"run-{layout}-{n}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    rows = []
    for mode in modes:
        load_before = load_average()
        row = RUNNERS[mode](meta, run_dir, workers)
        row.update(n=n, workers=workers, layout=layout, load_before=load_before, load_after=load_average())
        row["recombine_ms_per_task"] = None if row.get("recombine_s") is None else 1000 * row["recombine_s"] / n
        if row.get("task_s") is not None:
            row["ideal_s"] = row["task_s"] / workers
            # resqmp: the call, cluster already up; launch: the command's own wall clock (its
            # report) less getting workers ready (teardown and interpreter start stay in)
            busy = row["report_wall_s"] - row["cluster_start_s"] if mode == "launch" else row["wall_s"]
            row["wall_over_ideal"] = busy / row["ideal_s"]
        rows.append(row)
        if mode in ("recombine", "plain", "plain-resqmp"):
            continue
        print(f"N={n} {mode:7s} wall {row['wall_s']:8.2f} s  recombine {row['recombine_ms_per_task'] or 0:7.2f} ms/task  "
              f"first result {row.get('first_result_s') or float('nan'):7.2f} s"
              + (f"  tasks {row['task_s']:.1f} s (wall/ideal {row['wall_over_ideal']:.3f})" if row.get("task_s") else "")
              + (f"  groups of {row['group_size']}" if row.get("group_size") else "")
              + f"  load {load_before}->{row['load_after']}", flush=True)
    outputs = {r["engine"]: r["output"] for r in rows if r["engine"] != "recombine"}
    if "resqpy" in outputs:
        reference = content(outputs["resqpy"])
        for r in rows:
            if r["engine"] not in ("resqpy", "recombine", "plain", "plain-resqmp"):
                r["same_output_as_resqpy"] = content(r["output"]) == reference
                print(f"N={n} {r['engine']} output same as resqpy's: {r['same_output_as_resqpy']}", flush=True)
    by = {r["engine"]: r for r in rows}
    if "resqpy" in by and "resqmp" in by:
        ratio = by["resqmp"]["wall_s"] / by["resqpy"]["wall_s"]
        by["resqmp"]["ratio_to_resqpy"] = ratio
        print(f"N={n} resqmp/resqpy wall ratio {ratio:.3f}", flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    with open(root / "bench.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps({k: v for k, v in r.items() if k != "output"}) + "\n")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024, help="number of find-faces tasks (surfaces)")
    parser.add_argument("--scaling", help="comma separated N values, e.g. 256,512,1024,2048 (overrides --n)")
    parser.add_argument("--modes", default="resqpy,resqmp",
                        help="comma separated: resqpy, resqmp, launch, recombine, plain, plain-resqmp")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--layout", choices=("split", "single"), default="split",
                        help="split: grid and each surface in its own EPC (default); single: one EPC")
    parser.add_argument("--root", default=str(HERE / "results"), help="datasets, runs and bench.jsonl")
    parser.add_argument("--quiet-load", type=float, default=None,
                        help="before each N, wait (up to 30 min) until the 1-minute load average is below this")
    parser.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_child:
        floor_child(Path(args.root), args.n)
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    plain = {"plain", "plain-resqmp"}
    if plain & set(modes) and len(modes) != 1:
        parser.error("--modes plain (or plain-resqmp) runs alone: its workers must start without resqmp's environment")
    if not plain & set(modes):
        # The bench process imports resqpy too (the recombination runs here): same settings.
        global _worker_env_set
        os.environ.update(WORKER_ENV)
        _worker_env_set = True
    ns = [int(x) for x in args.scaling.split(",")] if args.scaling else [args.n]
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    info = machine()
    print("machine:", json.dumps(info), flush=True)
    with open(root / "bench.jsonl", "a") as f:
        f.write(json.dumps({"machine": info, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    for n in ns:
        if args.quiet_load is not None:
            deadline = time.monotonic() + 1800
            while (load_average() or 0) >= args.quiet_load and time.monotonic() < deadline:
                time.sleep(10)
        bench_one(n, modes, root, args.workers, args.layout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
