"""Where the launcher's CPU goes: `resqmp launch --profile local` on the find-faces batch, counting
the launcher process only (its worker processes excluded).

Not part of the test suite. The launch runs in a child process that calls the CLI in-process and
reports `resource.getrusage(RUSAGE_SELF)` (user + sys, interpreter start included) at the phase
boundaries, its peak RSS, and the CPU of each of its threads (/proc/self/task). With --profile
the child runs under py-spy (sampling, every thread, on-CPU samples only: `--idle` is off), and
the samples are classified by component (resqmp's merge steps, the in-process Dask scheduler and
client, journal, progress, report, imports...). Sampling distorts little, but the profiled run is
slower: the table quotes each component's share of the samples times the CPU of an unprofiled run.

    .venv/bin/python bench/launcher_cpu.py --n 1024                    # CPU and RSS, no profiler
    .venv/bin/python bench/launcher_cpu.py --n 1024 --profile          # + the table by component
    .venv/bin/python bench/launcher_cpu.py --n 1024 --set tasks.premerge=true   # group partials on local workers

With `--tasks sleepy` the batch is N tasks of bench_wrappers.sleepy_point_set (sleep, then write a
CRS and a 4-point PointSet): little CPU per task, so many workers can run at once. That is the
throughput benchmark (issue 11 goal 3) and the memory one (goal 4):

    .venv/bin/python bench/launcher_cpu.py --tasks sleepy --n 4096 --workers 32 --sleep 0.2 --dask
    .venv/bin/python bench/launcher_cpu.py --tasks sleepy --n 16384 --workers 32 --sleep 0.2

It reports sustained tasks/s (tasks / wall of the tasks phase), launcher CPU per task and peak
RSS; --dask also runs the same number of plain Dask tasks (each sleeps as long, does nothing
else) on a LocalCluster of the same shape, submitted one by one and gathered with as_completed,
and reports that process's CPU per task: Dask's own per-task cost on the client side (client
and in-process scheduler), the floor for one Dask task per task.

CPU time is what counts here (a shared, noisy machine changes wall clock, hardly CPU time); wall
seconds are printed for reference only. Results are appended to bench/results/launcher_cpu.jsonl.
"""
from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


# -- the child: one launch, measured from inside -------------------------------------------------

def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class ThreadCpu:
    """Last seen CPU seconds of every thread of this process, by Python thread name."""

    def __init__(self, every: float = 0.25):
        self.seen: dict[int, tuple[str, float]] = {}
        self.every = every
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._run, name="bench-thread-cpu", daemon=True)

    def sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        for tid in os.listdir("/proc/self/task"):
            try:
                stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            seconds = (int(fields[11]) + int(fields[12])) / self._tick
            tid = int(tid)
            name = names.get(tid) or self.seen.get(tid, (f"tid {tid}",))[0]
            self.seen[tid] = (name, seconds)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self.sample()
        by_name: dict[str, float] = collections.defaultdict(float)
        for name, seconds in self.seen.values():
            by_name[re.sub(r"[-_ ]?\d+$", "", name) or name] += seconds
        return dict(by_name)


class Meter:
    """CPU seconds of this thread spent in wrapped functions, each counted once: time spent in a
    wrapped function called from another wrapped function counts for the inner one only."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self._local = threading.local()

    def wrap(self, label: str, fn):
        def timed(*a, **k):
            stack = self._local.__dict__.setdefault("stack", [])
            start = time.thread_time()
            stack.append(0.0)
            try:
                return fn(*a, **k)
            finally:
                elapsed = time.thread_time() - start
                self.seconds[label] += elapsed - stack.pop()
                self.calls[label] += 1
                if stack:
                    stack[-1] += elapsed
        timed.__wrapped__ = fn
        return timed

    def patch(self, label: str, owner, name: str) -> bool:
        """Wrap owner.name when it exists (the measured code may move between versions)."""
        fn = getattr(owner, name, None)
        if fn is None:
            return False
        setattr(owner, name, self.wrap(label, fn))
        return True


#: (label, module, attribute path): what the launcher does, by component, innermost wins
COMPONENTS = [
    ("Dask client, main thread (submit, as_completed, results)", "resqmp.run", "run_on_client"),
    ("merge: other copy steps (resqpy's algorithm)", "resqmp.recombine", "Recombiner._merge"),
    ("merge: load task EPC", "resqmp.recombine", "load_task_model"),
    ("merge: load task EPC", "resqmp.task_parts", "TaskParts.load"),
    ("merge: load task EPC", "resqmp.premerge", "load_task_model"),        # a group partial, once per group
    ("merge: consolidation (equivalence)", "resqmp.consolidate", "IndexedConsolidation.equivalent_uuid_int_for_part"),
    ("merge: HDF5 copy", "resqmp.merge", "Merger._copy_h5_paths"),
    ("merge: HDF5 copy", "resqmp.h5_copy", "H5Copier.copy_paths"),
    ("merge: HDF5 copy", "resqmp.h5_copy", "H5Copier.close_input"),
    ("merge: relationships", "resqmp.merge", "Merger._reciprocal"),
    ("merge: relationships", "resqmp.relationships", "RelationshipIndex.reciprocal"),
    ("merge: serialise part XML", "resqmp.merge", "Merger._serialise_new_parts"),
    ("merge: serialise part XML", "resqmp.epc_store", "SerialisedParts.serialise_new_parts"),
    ("merge: disk-room check", "resqmp.preflight", "check_room"),
    ("merge: disk-room check", "resqmp.preflight", "RoomCheck.__call__"),
    ("journal (JSON line + fsync)", "resqmp.journal", "Journal.record"),
    ("progress lines", "resqmp.progress", "ProgressReport.advance"),
    ("publish (EPC written at the end)", "resqmp.recombine", "Recombiner.publish"),
    ("report (JSON at the end)", "resqmp.run", "write_report"),
]


def _patch_components(meter: Meter) -> list[str]:
    import importlib
    missing = []
    for label, module_name, path in COMPONENTS:
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            missing.append(f"{module_name}:{path}")
            continue
        *owners, name = path.split(".")
        for o in owners:
            owner = getattr(owner, o, None)
        if owner is None or not meter.patch(label, owner, name):
            missing.append(f"{module_name}:{path}")
    return missing


def _rss_mb() -> tuple[float, float]:
    """This process's resident set now and its peak so far (VmRSS, VmHWM), in MB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


class GcMeter:
    """CPU (thread time) the cyclic garbage collector takes, by generation, and collections."""

    def __init__(self):
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._start = None
        gc.callbacks.append(self._event)

    def _event(self, phase, info):
        if phase == "start":
            self._start = time.thread_time()
        elif self._start is not None:
            generation = info["generation"]
            self.seconds[generation] += time.thread_time() - self._start
            self.collections[generation] += 1
            self._start = None

    def snapshot(self) -> dict:
        return {"seconds": list(self.seconds), "collections": list(self.collections)}


def child(args) -> int:
    marks = {"interpreter": _cpu()}
    threads = ThreadCpu().start()
    gc_meter = GcMeter()
    import resqmp.run as run_mod
    from resqmp.cli import main
    marks["imports"] = _cpu()
    meter = Meter()
    missing = _patch_components(meter)
    walls = {}
    original_run = run_mod.run_on_client

    def run_on_client(*a, **k):
        marks["before_tasks"], walls["before_tasks"] = _cpu(), time.perf_counter()
        marks["gc_before_tasks"] = gc_meter.snapshot()
        marks["rss_before_tasks_mb"], marks["peak_rss_before_tasks_mb"] = _rss_mb()
        if os.environ.get("BENCH_TRACEMALLOC"):          # --tracemalloc: what the tasks phase keeps
            import tracemalloc
            tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "12")))
        main_before = time.thread_time()
        try:
            return original_run(*a, **k)
        finally:
            marks["tasks_done"], walls["tasks_done"] = _cpu(), time.perf_counter()
            marks["main_thread_tasks"] = time.thread_time() - main_before
            marks["gc_tasks_done"] = gc_meter.snapshot()
            marks["rss_tasks_done_mb"], marks["peak_rss_tasks_done_mb"] = _rss_mb()
            if os.environ.get("BENCH_TRACEMALLOC"):
                import tracemalloc
                gc.collect()
                tracemalloc.take_snapshot().dump(os.environ["BENCH_TRACEMALLOC"])
                tracemalloc.stop()

    run_mod.run_on_client = run_on_client
    main_start = time.thread_time()
    t0 = time.perf_counter()
    try:
        main.main(args=["launch", "--profile", "local", "--workers", str(args.workers), "--batch", args.batch,
                        "--output", args.output, "--fresh", "--set", f"scaling.worker_timeout={args.worker_timeout}",
                        *[a for kv in args.set for a in ("--set", kv)],
                        # the sleepy tasks' wrapper is the bench's own: allowed by name (see the README)
                        "--allow-wrapper", "bench_wrappers:sleepy_point_set"],
                  standalone_mode=False)
        code = 0
    except SystemExit as e:
        code = e.code
    wall = time.perf_counter() - t0
    marks["end"] = _cpu()
    r = resource.getrusage(resource.RUSAGE_SELF)
    result = {"exit_code": code, "wall_s": wall, "user_s": r.ru_utime, "sys_s": r.ru_stime,
              "cpu_s": r.ru_utime + r.ru_stime, "maxrss_mb": r.ru_maxrss / 1024, "marks": marks,
              "main_thread_launch_s": time.thread_time() - main_start,
              "tasks_wall_s": walls.get("tasks_done", 0) - walls.get("before_tasks", 0),
              "components": dict(meter.seconds), "calls": dict(meter.calls), "not_found": missing,
              "threads": threads.stop(), "voluntary_switches": r.ru_nvcsw, "minor_faults": r.ru_minflt}
    Path(args.result).write_text(json.dumps(result))
    return 0


# -- the parent: dataset, batch, runs, classification --------------------------------------------

def write_sleepy_batch(n: int, seconds: float, folder: Path) -> Path:
    """N sleepy_point_set tasks (bench/bench_wrappers.py)."""
    import yaml
    batch = folder / "batch.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "bench_wrappers:sleepy_point_set", "defaults": {"seconds": seconds},
                                     "tasks": [{"name": f"point set {i}"} for i in range(n)]}, sort_keys=False))
    return batch


def dask_child(args) -> int:
    """Dask alone: N tasks that sleep, one Dask task each, on a LocalCluster of the same shape."""
    from distributed import Client, LocalCluster, as_completed
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(args.workers)
            client.submit(time.sleep, 0, pure=False).result()
            before, t0 = _cpu(), time.perf_counter()
            futures = [client.submit(time.sleep, args.sleep, pure=False, key=f"sleep-{i}") for i in range(args.n)]
            for fut in as_completed(futures):
                fut.result()
                fut.release()
            cpu, wall = _cpu() - before, time.perf_counter() - t0
    r = resource.getrusage(resource.RUSAGE_SELF)
    Path(args.result).write_text(json.dumps({"cpu_s": cpu, "wall_s": wall, "maxrss_mb": r.ru_maxrss / 1024}))
    return 0


def write_batch(meta: dict, folder: Path) -> Path:
    """The dataset's tasks as a `resqmp launch` batch file (shared arguments under defaults)."""
    import yaml
    batch = folder / "batch.yaml"
    shared = ("grid_epc", "grid_uuid", "use_index_as_realisation", "n_threads")
    common = {k: v for k, v in meta["tasks"][0].items() if k in shared}
    tasks = [{k: v for k, v in t.items() if k not in common} for t in meta["tasks"]]
    batch.write_text(yaml.safe_dump({"wrapper": "find_faces_to_represent_surface_regular", "defaults": common,
                                     "tasks": tasks}, sort_keys=False))
    return batch


WORKER_TIMEOUT = 600.0

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for part in stack.split(";"):
        m = _FRAME.match(part)
        out.append((m["func"], m["file"]) if m else (part, ""))
    return out


def _in(frames, file_part: str) -> bool:
    return any(file_part in f for _, f in frames)


def classify_loop(frames: list[tuple[str, str]]) -> str:
    """What a sample of the event-loop thread (Dask's scheduler and client coroutines) was doing."""
    roots = [i for i, (fn, f) in enumerate(frames) if fn == "asyncio_run" and "distributed/compatibility" in f]
    if roots:
        frames = frames[roots[-1] + 1:]        # the loop runner itself is every sample's root
    if any(fn.startswith("sync.") and "distributed/utils.py" in f for fn, f in frames):
        return "Dask client (event loop)"       # the main thread's calls, run on the loop
    if _in(frames, "distributed/scheduler.py") or _in(frames, "distributed/stealing.py"):
        return "Dask scheduler (in-process)"
    if _in(frames, "distributed/client.py"):
        return "Dask client (event loop)"
    if _in(frames, "distributed/comm") or _in(frames, "distributed/protocol") or _in(frames, "distributed/batched.py"):
        return "Dask comm, (de)serialisation"
    if _in(frames, "distributed/system_monitor.py") or _in(frames, "psutil"):
        return "Dask system monitor"
    if _in(frames, "distributed/deploy") or _in(frames, "distributed/nanny.py"):
        return "Dask cluster (nannies)"
    if _in(frames, "distributed/"):
        return "Dask other (core, rpc, utils)"
    return "event loop (asyncio, tornado)"


_IDLE_LEAVES = ("select", "poll", "wait", "acquire", "sleep", "join")


def _idle(leaf: str) -> bool:
    """A sample waiting in the kernel (py-spy counts some of those as active)."""
    return leaf.rsplit(".", 1)[-1] in _IDLE_LEAVES


def loop_shares(raw_file: Path) -> dict[str, float]:
    """Share of the event-loop thread's samples per activity (py-spy's raw format, --threads).
    That thread does no disk I/O, so its on-CPU samples stand for its CPU time."""
    counts: collections.Counter = collections.Counter()
    for line in raw_file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = _frames(stack)
        if not frames or not frames[0][0].endswith(": IO loop") or _idle(frames[-1][0]):
            continue
        counts[classify_loop(frames[1:])] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.items()}


def table(n: int, r: dict, shares: dict[str, float] | None) -> list[tuple[str, float]]:
    """(component, CPU seconds) rows that add up to the process's rusage."""
    m = r["marks"]
    rows = [("startup: interpreter, imports, cluster start, warm-up (once per launch)", m["before_tasks"])]
    comps = dict(r["components"])
    publish = comps.pop("publish (EPC written at the end)", 0.0)
    report = comps.pop("report (JSON at the end)", 0.0)
    rows += sorted(comps.items(), key=lambda kv: -kv[1])
    loop = (m["tasks_done"] - m["before_tasks"]) - m["main_thread_tasks"]
    if shares:
        rows += [(f"{k} [event-loop thread]", loop * v) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])]
    else:
        rows.append(("event-loop thread: Dask scheduler, client, comm (run with --profile to split)", loop))
    rows += [("publish (EPC written at the end)", publish), ("report (JSON at the end)", report),
             ("teardown, clean-up, exit", m["end"] - m["tasks_done"] - publish - report)]
    return rows


def run_child(batch: Path, out: Path, workers: int, profile_file: Path | None, rate: int, sets=()) -> dict:
    result_file = out.with_suffix(".cpu.json")
    cmd = [sys.executable, __file__, "--child", "--batch", str(batch), "--output", str(out),
           "--result", str(result_file), "--workers", str(workers), "--worker-timeout", str(WORKER_TIMEOUT),
           *[a for kv in sets for a in ("--set", kv)]]
    # local workers inherit this: they import bench_wrappers for the sleepy batch
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    if profile_file is not None:
        spy = Path(sys.executable).parent / "py-spy"
        cmd = [str(spy), "record", "--rate", str(rate), "--format", "raw", "--threads", "--nonblocking",
               "--output", str(profile_file), "--"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not result_file.is_file():
        raise RuntimeError(f"launch child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    if result["exit_code"] != 0:
        raise RuntimeError(f"resqmp launch exited {result['exit_code']}: {proc.stderr[-3000:]}")
    return result


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def summarise(n: int, result: dict) -> dict:
    m = result["marks"]
    tasks_cpu = m["tasks_done"] - m["before_tasks"]
    return {**result,
            "total_ms_per_task": 1000 * result["cpu_s"] / n,
            "startup_s": m["before_tasks"],                     # interpreter, imports, cluster, warm-up
            "tasks_phase_s": tasks_cpu, "tasks_phase_ms_per_task": 1000 * tasks_cpu / n,
            "after_tasks_s": m["end"] - m["tasks_done"]}        # publish, report, teardown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1024, help="find-faces tasks (the batch has N)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also run under py-spy and classify the samples")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--repeat", type=int, default=1, help="unprofiled runs (the median CPU is quoted)")
    parser.add_argument("--root", default=str(HERE / "results"))
    parser.add_argument("--tasks", choices=("findfaces", "sleepy"), default="findfaces",
                        help="findfaces: the benchmark dataset; sleepy: bench_wrappers.sleepy_point_set")
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds each sleepy task waits")
    parser.add_argument("--dask", action="store_true", help="also measure Dask alone (see above)")
    parser.add_argument("--worker-timeout", type=float, default=600,
                        help="scaling.worker_timeout of the launch (many workers start slowly on a busy machine)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to resqmp launch (e.g. tasks.premerge=true: the local profile's workers "
                             "share the launcher's host, where auto makes no group partials)")
    parser.add_argument("--tracemalloc", metavar="FILE",
                        help="trace the tasks phase's allocations; FILE gets what is still held at its end "
                             "(a tracemalloc snapshot: CPU figures of such a run mean nothing)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dask-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.dask_child:
        return dask_child(args)
    global WORKER_TIMEOUT
    WORKER_TIMEOUT = args.worker_timeout
    if args.tracemalloc:
        os.environ["BENCH_TRACEMALLOC"] = str(Path(args.tracemalloc).resolve())

    root = Path(args.root)
    work = root / f"launcher-cpu-{args.tasks}-{args.n}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    if args.tasks == "sleepy":
        batch, n = write_sleepy_batch(args.n, args.sleep, work), args.n
    else:
        import dataset
        from resqmp.worker_env import DEFAULTS, expanded_here
        os.environ.update(expanded_here(DEFAULTS))      # dataset building imports resqpy here
        meta = dataset.build(root, args.n)
        batch, n = write_batch(meta, work), len(meta["tasks"])
    runs = []
    try:
        for k in range(args.repeat):
            load = load_average()
            runs.append(summarise(n, run_child(batch, work / f"out{k}.epc", args.workers, None, args.rate, args.set)))
            runs[-1]["load_before"], runs[-1]["load_after"] = load, load_average()
            r = runs[-1]
            print(f"N={n} run {k + 1}: launcher CPU {r['cpu_s']:.2f} s "
                  f"({r['total_ms_per_task']:.2f} ms/task; user {r['user_s']:.2f} sys {r['sys_s']:.2f}); "
                  f"startup {r['startup_s']:.2f} s, tasks phase {r['tasks_phase_s']:.2f} s "
                  f"({r['tasks_phase_ms_per_task']:.2f} ms/task), "
                  f"after tasks {r['after_tasks_s']:.2f} s; peak RSS {r['maxrss_mb']:.0f} MB; "
                  f"wall {r['wall_s']:.1f} s, tasks phase {r['tasks_wall_s']:.1f} s = {n / r['tasks_wall_s']:.1f} tasks/s; "
                  f"load {load} -> {r['load_after']}", flush=True)
            gc_a, gc_b = r["marks"].get("gc_before_tasks"), r["marks"].get("gc_tasks_done")
            if gc_a and gc_b:
                spent = [b - a for a, b in zip(gc_a["seconds"], gc_b["seconds"])]
                count = [b - a for a, b in zip(gc_a["collections"], gc_b["collections"])]
                print(f"  garbage collector in the tasks phase: {sum(spent):.2f} s "
                      f"({1000 * sum(spent) / n:.2f} ms/task; by generation "
                      + ", ".join(f"{s:.2f} s in {c}" for s, c in zip(spent, count)) + ")", flush=True)
            if "rss_tasks_done_mb" in r["marks"]:
                m = r["marks"]
                print(f"  resident set: {m['rss_before_tasks_mb']:.0f} MB when the tasks began, "
                      f"{m['rss_tasks_done_mb']:.0f} MB when they were done "
                      f"(peak {m['peak_rss_tasks_done_mb']:.0f} MB by then), {r['maxrss_mb']:.0f} MB peak overall", flush=True)
        runs.sort(key=lambda r: r["total_ms_per_task"])
        median = runs[len(runs) // 2]
        print("threads (CPU s):", ", ".join(f"{k} {v:.2f}" for k, v in
                                              sorted(median["threads"].items(), key=lambda kv: -kv[1]) if v >= 0.05))
        row = {"n": n, "workers": args.workers, "tasks": args.tasks, "sleep": args.sleep, "runs": runs,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if args.dask:
            result_file = work / "dask.json"
            load = load_average()
            subprocess.run([sys.executable, __file__, "--dask-child", "--n", str(n), "--workers", str(args.workers),
                            "--sleep", str(args.sleep), "--result", str(result_file)], check=True)
            d = json.loads(result_file.read_text())
            row["dask_alone"] = d
            print(f"Dask alone, {n} tasks of sleep({args.sleep}) on {args.workers} workers, one Dask task each: "
                  f"client process CPU {d['cpu_s']:.2f} s = {1000 * d['cpu_s'] / n:.2f} ms/task, "
                  f"{n / d['wall_s']:.1f} tasks/s, peak RSS {d['maxrss_mb']:.0f} MB; load {load} -> {load_average()}",
                  flush=True)
        shares = None
        if args.profile:
            raw = work / "pyspy.txt"
            load = load_average()
            profiled = summarise(n, run_child(batch, work / "profiled.epc", args.workers, raw, args.rate, args.set))
            shares = loop_shares(raw)
            print(f"profiled run (event-loop split only): CPU {profiled['cpu_s']:.2f} s (load {load} -> "
                  f"{load_average()})")
            row.update(profiled=profiled, loop_shares=shares)
            shutil.copy(raw, root / f"launcher-cpu-{args.n}.pyspy.txt")
        rows = table(n, median, shares)
        print(f"\nN={n}, launcher CPU by component (run with the median total):\n")
        print("| component | CPU s | ms/task |\n|---|---:|---:|")
        for name, seconds in rows:
            print(f"| {name} | {seconds:.2f} | {1000 * seconds / n:.2f} |")
        print(f"| **total (rusage: user + sys)** | **{median['cpu_s']:.2f}** | **{median['total_ms_per_task']:.2f}** |")
        print(f"| of which in the tasks phase | {median['tasks_phase_s']:.2f} | {median['tasks_phase_ms_per_task']:.2f} |")
        row["table"] = rows
        with open(root / "launcher_cpu.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
