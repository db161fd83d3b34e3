"""`resqmp profiles check`: provision a profile's cluster for real and walk every stage a launch
depends on, one line per stage, so a site admin learns that a profile is broken before a user does.

Each stage is one function below, using the pieces `resqmp launch` uses (profiles.load, the
backend's start and scheduler view, worker_env, preflight, execute.run_on_client, Recombiner), so
the check fails where a launch would, with the same words. The first stage that fails decides the
exit code (README "Exit codes"); later stages are skipped; teardown always runs, also on Ctrl-C,
and checks that the resource manager no longer lists a job of the check.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape

from resqmp import batch as batch_mod
from resqmp import interrupts, preflight, profiles
from resqmp.backends import for_profile
from resqmp.errors import ClusterError, ExitCode, Interrupted, ResqmpError
from resqmp.text import printable
from resqmp.worker_env import references, register_logging, worker_environment

INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
#: stages in the order a launch meets them
STAGES = ("profile", "example", "submission", "joined", "tls", "environment", "shared", "inputs", "run",
          "teardown")
#: how long teardown waits for the resource manager to stop listing the check's jobs
TEARDOWN_SECONDS = 120.0
#: how long submission waits for the resource manager to answer every submission
SUBMIT_SECONDS = 120.0


class CheckFailed(ResqmpError):
    """A stage failed: str() names the stage and carries the message; exit_code is the stage's."""

    def __init__(self, stage: str, message: str, exit_code: int):
        super().__init__(f"profiles check: stage {stage} failed: {message}")
        self.stage, self.message, self.exit_code = stage, message, exit_code


@dataclass
class Outcome:
    stage: str
    status: str               # ok | warn | FAILED | skipped
    seconds: float
    detail: str
    exit_code: int = ExitCode.OK


@dataclass
class Check:
    """The state of one check, shared by the stages."""
    profile_ref: str
    overrides: tuple[str, ...] = ()
    workers: int | None = None
    profile: object = None
    backend: object = None
    env: dict = field(default_factory=dict)
    shared: Path | None = None
    workdir: Path | None = None
    made: list[Path] = field(default_factory=list)      # folders the check created (outermost first)
    example: dict = field(default_factory=dict)
    batch: object = None
    cluster: object = None
    client: object = None
    planned: int = 1
    submitted_at: float = 0.0
    job_ids: list[str] = field(default_factory=list)
    worker_pids: dict[str, int] = field(default_factory=dict)     # local workers: address -> pid
    first_worker: str | None = None
    warnings: list[str] = field(default_factory=list)
    withdraw_logging: object = None     # the workers' own logging back (external scheduler)

    @property
    def manages_workers(self) -> bool:
        return self.cluster is not None and self.cluster.manages_workers


# --------------------------------------------------------------------------- stages

def stage_profile(c: Check) -> str:
    """The profile loads (extends, --set) and its backend renders what it would start."""
    c.profile = profiles.load(c.profile_ref, c.overrides)
    c.env = worker_environment(c.profile)
    c.backend = for_profile(c.profile, c.env)         # checks every option value (exit 4)
    try:
        c.backend.render()
    except (ValueError, TypeError) as e:
        raise CheckFailed("profile", f"profile {c.profile.source}: {e}", ExitCode.PROFILE) from None
    scaling = c.profile.scaling
    wanted = int(scaling["adaptive"]["maximum"]) if "adaptive" in scaling else int(scaling.get("workers", 1))
    c.planned = max(1, c.workers or min(2, wanted))
    return f"{c.profile.name} ({c.profile.backend}) from {c.profile.source}; checking with {c.planned} worker" \
           + ("s" if c.planned != 1 else "")


def stage_example(c: Check) -> str:
    """A two-task find-faces example batch in a fresh folder of the shared directory, as launch
    would put task files there (the launcher side: exists, writable)."""
    from resqmp.example import write_example
    c.shared = preflight.shared_directory(c.profile, Path.cwd() / "profiles-check.epc")
    c.made = preflight.check_shared_directory(c.shared)
    c.workdir = Path(tempfile.mkdtemp(prefix=".resqmp-check-", dir=c.shared))
    # small, but find-faces takes its ordinary path (as resqmp warm's model)
    c.example = write_example(c.workdir / "example", surfaces=2, wells=1, mesh_properties=1, extent_kji=(4, 8, 8))
    c.batch = batch_mod.load(c.example["batch"])
    return f"{len(c.batch.tasks)}-task batch ({c.batch.wrapper}) in {c.workdir}"


def stage_submission(c: Check) -> str:
    """The cluster starts and the resource manager accepts every worker job (its job ids)."""
    try:
        c.cluster = c.backend.start()
        c.client = c.cluster.connect()
    except ResqmpError:
        raise
    except Exception as e:   # noqa: BLE001 - one line, as launch says it
        raise ClusterError(f"profile {c.profile.source}: the {c.profile.backend} cluster did not start: "
                           f"{type(e).__name__}: {e}") from e
    c.warnings.extend(f"submission: {w}" for w in c.cluster.warnings)   # what connect() found
    c.withdraw_logging = register_logging(c.client, c.profile, workers_outlive_run=not c.manages_workers)
    if not c.manages_workers:
        return (f"external scheduler {c.client.scheduler.address}: nothing to submit (its workers are "
                f"started elsewhere)")
    c.submitted_at = time.monotonic()
    c.cluster.scale(c.planned)
    job_ids = getattr(c.cluster, "job_ids", None)           # batch schedulers' clusters only
    if job_ids is None:                                     # local processes, Kubernetes pods
        return f"{c.planned} worker{'s' * (c.planned != 1)} requested from {type(c.cluster).__name__}"
    deadline = time.monotonic() + SUBMIT_SECONDS
    failure = None
    while time.monotonic() < deadline:
        c.job_ids = sorted(job_ids())
        if len(c.job_ids) >= c.planned:
            break
        failure = c.cluster.startup_failure()              # refused submissions: no need to wait on
        if failure:
            break
        interrupts.raise_if_requested()
        time.sleep(0.2)
    if len(c.job_ids) < c.planned:
        raise ClusterError((failure or f"{len(c.job_ids)} of {c.planned} jobs submitted within "
                                       f"{SUBMIT_SECONDS:.0f} s") + _scheduler_says(c))
    return f"job{'s' * (len(c.job_ids) != 1)} {', '.join(c.job_ids)} accepted"


def stage_joined(c: Check) -> str:
    """A worker joins within scaling.worker_timeout (else the scheduler's view and the jobs' log
    tails, as launch gives them; at once when the cluster knows none will come, e.g. every
    worker job ended); the others get what is left of that time."""
    from resqmp.run import _wait_for_first_worker
    timeout = float(c.profile.scaling.get("worker_timeout", 300))
    start = c.submitted_at or time.monotonic()
    _wait_for_first_worker(c.client, c.cluster, timeout, c.profile)
    first_after = time.monotonic() - start
    workers = c.client.scheduler_info()["workers"]
    c.first_worker = min(workers, key=lambda w: workers[w].get("id", ""))
    host = workers[c.first_worker].get("host") or c.first_worker
    if c.manages_workers and len(workers) < c.planned:
        try:
            c.client.wait_for_workers(c.planned, timeout=max(1.0, min(120.0, start + timeout - time.monotonic())))
        except TimeoutError:
            c.warnings.append(f"joined: {len(c.client.scheduler_info()['workers'])} of {c.planned} workers")
    workers = c.client.scheduler_info()["workers"]
    hosts = sorted({w.get("host") or a for a, w in workers.items()})
    return (f"first worker on {host} after {first_after:.1f} s; {len(workers)} worker{'s' * (len(workers) != 1)} "
            f"on {', '.join(hosts)}")


def stage_tls(c: Check) -> str:
    """Scheduler and workers talk TLS where the profile asks for it (jobqueue: security: true, the
    default). Local workers talk over loopback; a profile that turns TLS off is a warning."""
    addresses = [c.client.scheduler.address, *c.client.scheduler_info()["workers"]]
    plain = [a for a in addresses if not a.startswith("tls://")]
    backend = c.profile.backend
    if backend == "local":
        return "not used: scheduler and workers on this machine (" + addresses[0].split("://")[0] + ")"
    expected = _tls_expected(c.profile)
    if not plain:
        return f"tls:// for the scheduler and {len(addresses) - 1} worker{'s' * (len(addresses) != 2)}"
    if expected:
        raise ClusterError(f"the profile asks for TLS but {plain[0]} is not a tls:// address")
    c.warnings.append("tls: off (the profile's cluster.security turns it off)")
    return f"off: {plain[0].split('://')[0]}:// (the profile's cluster.security turns it off)"


def stage_environment(c: Check) -> str:
    """What each worker's interpreter really has: the profile's variables, numba's and the
    BLAS/OpenMP thread pools, a writable NUMBA_CACHE_DIR, resqpy's cache switch; then the numba cache
    filled on one worker (as launch's warm-up) and numba's own counters say whether it was warm."""
    names = list(c.env)
    seen = c.client.run(worker_environment_report, names)
    problems: dict[str, list[str]] = {}     # what is wrong -> the workers where it is

    class _Problems(list):
        def append(self, text: str) -> None:
            problems.setdefault(text, []).append(where)

    for address, r in sorted(seen.items()):
        c.worker_pids[address] = r["pid"]
        where = f"{address} on {r['host']}"
        found = _Problems()
        for name, value in c.env.items():
            if references(value):
                continue                    # expands on the worker: nothing to compare it with
            if r["environ"].get(name) != value:
                found.append(f"{name}={r['environ'].get(name)!r}, the profile sets {value!r}")
        want = c.env.get("NUMBA_NUM_THREADS")
        if want and want.isdigit() and r["numba_threads"] != int(want):
            found.append(f"numba runs {r['numba_threads']} threads (NUMBA_NUM_THREADS={want} "
                            f"was not set before numba was imported)")
        for pool in r["pools"]:
            limit = c.env.get(_POOL_VARIABLE.get(pool["internal_api"], ""), "")
            if limit.isdigit() and pool["num_threads"] > int(limit):
                found.append(f"{pool['internal_api']} ({pool.get('filepath')}) runs "
                                f"{pool['num_threads']} threads, above {limit}")
        if r["cache_wanted"]:
            if r["cache_error"]:
                found.append(f"NUMBA_CACHE_DIR {r['cache_dir']!r} is not writable ({r['cache_error']}); "
                                f"numba would cache elsewhere or compile on every start")
            elif not r["cache_enabled"]:
                found.append("resqpy does not cache its numba functions (RESQPY_NUMBA_CACHE "
                                "was not true when resqpy was imported)")
    if problems:
        raise ClusterError("; ".join(f"worker{'s' * (len(w) != 1)} {', '.join(w)}: {text}" for text, w in problems.items()))
    first = seen[c.first_worker] if c.first_worker in seen else next(iter(seen.values()))
    pools = sorted({f"{p['internal_api']}={p['num_threads']}" for r in seen.values() for p in r["pools"]})
    threads = f"numba={first['numba_threads']}" + (f", {', '.join(pools)}" if pools else "")
    return f"threads {threads} on {len(seen)} worker{'s' * (len(seen) != 1)}; {_warm(c, first)}"


def stage_shared(c: Check) -> str:
    """One worker per host reads a file written here and writes in the shared directory."""
    seen = preflight.check_workers_see(c.client, c.workdir, [], planned=c.planned,
                                       timeout=float(c.profile.scaling.get("worker_timeout", 300)))
    return f"{c.workdir} read and written from {', '.join(seen['hosts'])}"


def stage_inputs(c: Check) -> str:
    """Every host sees the example batch's inputs, and the batch's wrapper imports on every worker."""
    inputs = c.batch.input_paths()
    seen = preflight.check_workers_see(c.client, c.workdir, inputs, planned=c.planned,
                                       timeout=float(c.profile.scaling.get("worker_timeout", 300)))
    preflight.check_wrapper_on_workers(c.client, c.batch.wrapper)
    return f"{len(inputs)} input file{'s' * (len(inputs) != 1)} seen and {c.batch.wrapper} imported on " \
           f"{', '.join(seen['hosts'])}"


def stage_run(c: Check) -> str:
    """The two tasks run as launch runs them (execute.run_on_client) and are recombined into one EPC
    (Recombiner), which must hold one grid connection set per task."""
    from resqmp.execute import run_on_client
    from resqmp.numba_stats import resqpy_numba_stats
    from resqmp.recombine import Recombiner
    run_dir = c.workdir / "tasks"
    run_dir.mkdir()
    out = c.workdir / "recombined.epc"
    recombiner = Recombiner(out)
    results: dict[int, dict] = {}
    start = time.monotonic()
    try:
        def on_result(result: dict) -> None:
            results[result["index"]] = result
            if result["success"]:
                recombiner.offer(result["index"], result["epc_file"], result["uuid_list"])
            else:
                recombiner.skip(result["index"])

        todo = dict(enumerate(c.batch.tasks))
        task_cfg = c.profile.tasks
        run_on_client(c.client, c.batch.wrapper, todo, str(run_dir), on_result,
                      retries=int(task_cfg.get("retries", 2)), retry_on_error=bool(task_cfg.get("retry_on_error", False)),
                      timeout=task_cfg.get("timeout"), group_size=1, workers=c.planned)
        failed = [r for r in results.values() if not r["success"]]
        if failed:
            raise CheckFailed("run", "; ".join(f"task {r['index']} ({c.batch.names[r['index']]}) failed on "
                                               f"{r.get('worker')}: {r.get('error') or 'the wrapper reported no success'}"
                                               for r in failed), ExitCode.TASKS_FAILED)
        recombiner.publish()
    except BaseException:
        recombiner.abort()
        raise
    seconds = time.monotonic() - start
    import resqpy.model as rq
    sets = rq.Model(str(out)).parts(obj_type="GridConnectionSetRepresentation")
    if len(sets) != len(c.batch.tasks):
        raise CheckFailed("run", f"recombined {out} holds {len(sets)} grid connection sets, expected "
                                 f"{len(c.batch.tasks)}", ExitCode.TASKS_FAILED)
    workers = sorted({r.get("worker") for r in results.values()})
    stats = c.client.run(resqpy_numba_stats)
    compiled = {w: s["compiled"] for w, s in stats.items() if s["cache_misses"] and w != c.first_worker}
    if compiled and _cache_wanted(c.env):
        c.warnings.append("run: " + ", ".join(f"worker {w} compiled {', '.join(n)}" for w, n in compiled.items())
                          + " although the cache had been filled (numba's cache does not reach it)")
    return (f"{len(results)} tasks in {seconds:.1f} s on {len(workers)} worker{'s' * (len(workers) != 1)}, "
            f"recombined into one EPC with {len(sets)} grid connection sets")


def stage_teardown(c: Check) -> str:
    """Client and cluster closed; the resource manager lists none of the check's jobs any more
    (local: every worker process has ended); the check's folder removed."""
    if c.withdraw_logging is not None:
        c.withdraw_logging()           # before the client closes: it is the one that registered it
    for obj in (c.client, c.cluster if c.manages_workers else None):
        if obj is not None:
            try:
                obj.close()
            except Exception:   # noqa: BLE001 - what is left is checked below
                pass
    if c.workdir is not None:
        shutil.rmtree(c.workdir, ignore_errors=True)
    preflight.remove_folders(c.made)        # the folders the check made for its shared directory, if empty
    if c.cluster is None:
        return "nothing was started"
    if not c.manages_workers:
        return "client closed (the external scheduler and its workers keep running)"
    deadline = time.monotonic() + TEARDOWN_SECONDS
    if c.job_ids:
        listed = _listed_jobs(c.profile.backend, c.job_ids)
        while listed and time.monotonic() < deadline:
            time.sleep(1.0)
            listed = _listed_jobs(c.profile.backend, c.job_ids)
        if listed:
            raise ClusterError(f"job{'s' * (len(listed) != 1)} {', '.join(listed)} still listed "
                               f"{TEARDOWN_SECONDS:.0f} s after the cluster closed; cancel "
                               f"{'them' if len(listed) != 1 else 'it'} by hand")
        return f"no job left in the queue ({', '.join(c.job_ids)} gone)"
    alive = [p for p in c.worker_pids.values() if _alive(p)]
    while alive and time.monotonic() < deadline and c.profile.backend == "local":
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    if alive and c.profile.backend == "local":
        raise ClusterError(f"worker process{'es' * (len(alive) != 1)} {', '.join(map(str, alive))} still running")
    return "cluster closed" + (", every worker process ended" if c.profile.backend == "local" else "")


# --------------------------------------------------------------------------- on the worker

_POOL_VARIABLE = {"openmp": "OMP_NUM_THREADS", "openblas": "OPENBLAS_NUM_THREADS", "mkl": "MKL_NUM_THREADS",
                  "blis": "OMP_NUM_THREADS"}


def worker_environment_report(names: list[str]) -> dict:
    """Run on a worker: the named variables, numba's thread count and cache settings, the
    BLAS/OpenMP pools (threadpoolctl), and whether NUMBA_CACHE_DIR can be written."""
    import socket

    import numba
    from threadpoolctl import threadpool_info
    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or ""
    error = ""
    if cache_dir:
        try:                                # what numba's own locator does before caching there
            os.makedirs(cache_dir, exist_ok=True)
            tempfile.TemporaryFile(dir=cache_dir).close()
        except OSError as e:
            error = e.strerror or str(e)
    compat = __import__("sys").modules.get("resqpy.olio.numba_compat")
    if compat is None:
        import resqpy.olio.numba_compat as compat
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "environ": {n: os.environ.get(n) for n in names},
            "numba_threads": int(numba.config.NUMBA_NUM_THREADS),
            "pools": [{k: p.get(k) for k in ("internal_api", "num_threads", "filepath")} for p in threadpool_info()],
            "cache_wanted": _cache_wanted(os.environ), "cache_dir": cache_dir, "cache_error": error,
            "cache_enabled": bool(compat.ENABLE_NUMBA_CACHE)}


def _cache_wanted(env) -> bool:
    return str(env.get("RESQPY_NUMBA_CACHE", "")).lower().startswith("t")


# --------------------------------------------------------------------------- helpers

def _warm(c: Check, first: dict) -> str:
    """Fill the cache on the first worker as launch does; numba's counters there say whether it
    loaded resqpy's compiled code from the cache (warm) or compiled it now (cold, filled now)."""
    if not first["cache_wanted"]:
        return "numba cache off (RESQPY_NUMBA_CACHE is not true)"
    from resqmp.numba_stats import resqpy_numba_stats
    from resqmp.run import _warm_first_worker
    warmed = _warm_first_worker(c.client, c.first_worker, c.batch.wrapper) or {}
    if warmed.get("errors"):
        raise ClusterError(f"numba warm-up on worker {c.first_worker} failed: "
                           + "; ".join(f"{k}: {v}" for k, v in warmed["errors"].items()))
    stats = c.client.run(resqpy_numba_stats, workers=[c.first_worker])[c.first_worker]
    state = "warm" if stats["cache_misses"] == 0 and stats["cache_hits"] else \
        f"cold, filled now ({stats['cache_misses']} compiled)"
    return f"numba cache {first['cache_dir']} writable, {state}"


def _tls_expected(profile) -> bool:
    if profile.backend in ("slurm", "sge", "pbs", "lsf"):
        return profile.cluster.get("security", True) is not False
    if profile.backend == "external":
        return bool(profile.cluster.get("security"))
    return False


def _scheduler_says(c: Check) -> str:
    view = c.cluster.scheduler_view() if c.manages_workers else ""
    view = " | ".join(line.strip() for line in view.strip().splitlines() if line.strip())
    return f"; scheduler says: {view}" if view else ""


#: the resource manager's list of jobs: command, and how to read a job id from each line
_QUEUE = {"slurm": ["squeue", "-h", "-o", "%i"], "sge": ["qstat", "-u", "*"], "pbs": ["qstat"],
          "lsf": ["bjobs", "-w", "-u", "all"]}


def _listed_jobs(backend: str, ids: list[str]) -> list[str]:
    """Which of ids the resource manager still lists (pending, running, being cancelled)."""
    try:
        out = subprocess.run(_QUEUE[backend], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return list(ids)                            # cannot tell: not gone as far as we know
    listed = {line.split()[0].split(".")[0] for line in out.splitlines() if line.split()}
    return [i for i in ids if i.split(".")[0] in listed]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- the walk

_EXIT = {"profile": ExitCode.PROFILE, "example": ExitCode.OUTPUT, "run": ExitCode.TASKS_FAILED}

_FUNCTIONS: dict[str, Callable[[Check], str]] = {
    "profile": stage_profile, "example": stage_example, "submission": stage_submission, "joined": stage_joined,
    "tls": stage_tls, "environment": stage_environment, "shared": stage_shared, "inputs": stage_inputs,
    "run": stage_run, "teardown": stage_teardown,
}


def check(profile_ref: str, overrides: tuple[str, ...] = (), workers: int | None = None,
          console: Console | None = None) -> list[Outcome]:
    """Walk every stage; print one line per stage as it ends. Returns the outcomes when every stage
    passed; raises CheckFailed (the first failing stage's exit code) or Interrupted otherwise."""
    from resqmp.run import _process_state_restored
    console = console or Console(soft_wrap=True, highlight=False)
    c = Check(profile_ref, tuple(overrides), workers)
    outcomes: list[Outcome] = []
    failure: CheckFailed | None = None
    interrupted = False
    # Only a stage's own work can be cut by a signal: one landing between stages (while a line is
    # printed, the dask config snapshotted) is recorded, and the next stage is marked interrupted;
    # the loop always reaches the teardown stage, which a Ctrl-C asks for and never breaks into.
    with interrupts.shielded(), ExitStack() as stack:
        for stage in STAGES:
            if stage == "submission":
                # as launch: the cluster changes this process's environment and dask config (local
                # workers' variables); restored afterwards to what it was with the backend imported
                stack.enter_context(_process_state_restored())
            if stage == "teardown":
                outcome = _run_stage(c, stage)
            elif failure is None and not interrupted and interrupts.requested():
                # recorded where it could not be raised (between stages, a GC callback)
                outcome = Outcome(stage, "interrupted", 0.0, INTERRUPTED, ExitCode.INTERRUPTED)
            elif failure is None and not interrupted:
                outcome = _run_stage(c, stage, cuttable=True)
            else:
                outcome = Outcome(stage, "skipped", 0.0, "")
            if outcome.status == "interrupted":
                interrupted = True
            elif outcome.status == "FAILED" and failure is None:
                failure = CheckFailed(stage, outcome.detail, outcome.exit_code)
            outcomes.append(outcome)
            _print(console, outcome)
    for warning in c.warnings:
        console.print(f"resqmp: warning: {escape(printable(warning))}", style="yellow")
    if interrupted or interrupts.requested():     # also a Ctrl-C during the teardown
        raise Interrupted("interrupted: the check's cluster was torn down")
    if failure:
        raise failure
    return outcomes


def _run_stage(c: Check, stage: str, cuttable: bool = False) -> Outcome:
    """cuttable: a signal may interrupt the stage (every stage but the teardown)."""
    start = time.monotonic()
    status, code = "ok", ExitCode.OK
    try:
        with interrupts.interruptible() if cuttable else nullcontext():
            detail = _FUNCTIONS[stage](c)
        if any(w.startswith(f"{stage}:") for w in c.warnings):
            status = "warn"
    except KeyboardInterrupt:
        status, detail, code = "interrupted", INTERRUPTED, ExitCode.INTERRUPTED
    except CheckFailed as e:
        status, detail, code = "FAILED", e.message, e.exit_code
    except ResqmpError as e:
        status, detail, code = "FAILED", str(e), e.exit_code
    except Exception as e:   # noqa: BLE001 - a stage that breaks is a failed stage, in one line
        status, detail = "FAILED", f"{type(e).__name__}: {e}"
        code = _EXIT.get(stage, ExitCode.CLUSTER)
    return Outcome(stage, status, time.monotonic() - start, detail, code)


_STYLE = {"ok": "green", "warn": "yellow", "FAILED": "bold red", "skipped": "dim", "interrupted": "bold red"}


def _print(console: Console, o: Outcome) -> None:
    took = f"{o.seconds:6.1f} s" if o.status != "skipped" else "       -"
    console.print(f"[{_STYLE[o.status]}]{o.status:<11}[/] {o.stage:<12} {took}  {escape(printable(o.detail))}")
