"""`resqmp launch`: profile -> cluster -> worker environment -> batch -> run -> recombine -> report."""
from __future__ import annotations

import copy
import datetime as dt
import gc
import hashlib
import logging
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dask

from resqmp import batch as batch_mod
from resqmp import dashboard as dashboard_mod
from resqmp import interrupts, perf_report, preflight, profiles, upload
from resqmp.backends import for_profile
from resqmp.errors import ClusterError, ExitCode, Interrupted, OutputError, ResqmpError
from resqmp.execute import run_on_client
from resqmp.journal import Journal, locked_if_there
from resqmp.outputs import h5_of, partial_path, written_files
from resqmp.paths import named_path
from resqmp.progress import ProgressReport
from resqmp.recombine import Recombiner, remove_stale_staging
from resqmp.report import task_row, write_report
from resqmp.worker_env import register_logging, worker_environment

log = logging.getLogger("resqmp")

#: tasks.stall_after by default: seconds without a finished task before the launcher says which
#: tasks run where (then again each time the silence doubles)
STALL_AFTER = 300
#: what a Ctrl-C or SIGTERM gets once the recombined model is being written (it is finished, not cut)
FINISHING = "resqmp: finishing: writing the recombined model, its report and cleaning up; then resqmp exits"

#: Dask settings for the servers the launcher starts in its own process (the scheduler of the local
#: and jobqueue backends, the local workers' nannies) and the workers they start. Each of them
#: samples psutil every 0.5 s (system monitor) and measures its event loop every 20 ms (tick), on
#: the launcher's one core whether tasks finish or not: 43 ms of CPU per second of wall with two
#: local workers, 98 with eight; 16 and 43 with these values (issue 11, bench/RESULTS.md). Every
#: 2 s still draws the dashboard's system plots; a 200 ms tick still reports a blocked event loop
#: (distributed.admin.tick.limit, 3 s). Key -> (distributed's default, resqmp's): a value the
#: site's dask config chose is kept.
LAUNCHER_DASK_CONFIG = {"distributed.admin.system-monitor.interval": ("500ms", "2s"),
                        "distributed.admin.tick.interval": ("20ms", "200ms")}


@dataclass
class RunState:
    """One launch, from its checks to its report: what every phase after the checks reads."""
    profile: profiles.Profile
    backend: object                      # resqmp.backends: starts the cluster
    batch: batch_mod.Batch
    out: Path
    shared: Path                         # the shared directory (task files, TLS files)
    run_dir: Path                        # this output's task directory in it (run_directory)
    journal: Journal                     # holds OUT's lock
    started: dt.datetime
    t0: float                            # time.monotonic() at the start, for wall_seconds
    keep: bool                           # keep the task files of a successful run
    overwrite: bool = False
    previous: dict | None = None         # the report of the run that wrote OUT, if resqmp's
    perf: Path | None = None             # --performance-report
    code: tuple = ()                     # uploads (resqmp.upload), shipped to every worker
    staging_tidied: bool = False         # OUT's stale staging folders dealt with before the checks
    results: dict[int, dict] = field(default_factory=dict)     # final record by task index
    summary: dict = field(default_factory=dict)                # the report's summary


@dataclass
class LaunchResult:
    output: Path
    report: Path
    exit_code: int
    succeeded: int
    failed: int
    resumed: int
    tasks: list[dict] = field(default_factory=list)
    partial: Path | None = None      # where this run's model went when OUT was kept (see _publish)


def run_directory(shared: Path, output: Path) -> Path:
    """Stable per output, so a rerun of the same command finds its task files again."""
    return shared / f"resqmp-{hashlib.sha256(str(output).encode()).hexdigest()[:16]}"


def launch(profile_ref: str, batch_path: str, output: str, overrides: tuple[str, ...] = (),
           workers: int | None = None, fresh: bool = False, keep_task_files: bool | None = None,
           progress: ProgressReport | None = None, overwrite: bool = False,
           performance_report: str | None = None, allowed_wrappers: tuple[str, ...] = (),
           uploads: tuple[str, ...] = ()) -> LaunchResult:
    """allowed_wrappers: what the batch may run besides resqpy's wrappers, added to the profile's
    tasks.allowed_wrappers (see batch.resolve_wrapper). uploads: --upload paths, shipped to every
    worker with the profile's tasks.upload."""
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    # Everything that can be checked before provisioning is checked first.
    profile = profiles.load(profile_ref, overrides, workers=workers)   # --workers N: a fixed count
    backend = for_profile(profile, worker_environment(profile))     # option values checked here
    out = named_path(output, "output", OutputError)     # a link loop, a path too long: exit 6
    preflight.check_output(out)
    perf = perf_report.target(performance_report, tuple(written_files(out).values()))
    code = upload.collect(profile, uploads)         # read and checked before any cluster starts
    with upload.importable_here(code):               # the launcher checks the wrapper's signature
        batch = batch_mod.load(batch_path, allowed_wrappers=(*profile.tasks.get("allowed_wrappers", ()),
                                                             *allowed_wrappers))
    shared = preflight.shared_directory(profile, out)
    run_dir = run_directory(shared, out)
    # OUT's files never land on an input; files resqmp did not write are replaced only with --overwrite
    preflight.check_inputs_untouched(out, batch, run_dir)
    preflight.check_log_file(profile, out, batch)    # every worker appends to it
    preflight.check_task_directory(out, run_dir)
    # what a launcher killed mid-publish left is put back before OUT's files are judged
    staging_tidied = _tidy_staging_before_checks(out)
    previous = preflight.check_ownership(out, overwrite)
    made = preflight.check_shared_directory(shared)
    try:
        journal = Journal(out, batch.digest, run_dir, len(batch.tasks), fresh=fresh)   # locks OUT
    except BaseException:
        preflight.remove_folders(made)      # refused before any work: nothing new left behind
        raise
    try:
        keep = profile.storage.get("keep_task_files", False) if keep_task_files is None else keep_task_files
        run = RunState(profile, backend, batch, out, shared, run_dir, journal, started, t0, keep, overwrite,
                       previous, perf, code, staging_tidied=staging_tidied)
        return _launch_locked(run, fresh, progress)
    finally:
        journal.close()


def _launch_locked(run: RunState, fresh: bool, progress: ProgressReport | None) -> LaunchResult:
    profile, batch, out, journal = run.profile, run.batch, run.out, run.journal
    if fresh:
        shutil.rmtree(run.run_dir, ignore_errors=True)
    if not run.staging_tidied:    # left by a launcher that was killed; ours: we hold OUT's journal lock
        remove_stale_staging(out)
    _remove_set_aside(run.run_dir)

    results = run.results
    results.update({i: {**record, "resumed": True} for i, record in journal.done.items()})
    report = progress or ProgressReport(total=len(batch.tasks), already_done=len(results))
    for warning in profile.warnings:
        report.warn(warning)
    if journal.warning():
        report.warn(journal.warning())
    if results:
        report.info(f"resuming: {len(results)} of {len(batch.tasks)} tasks already done ({journal.path})")
    run.summary.update({"output": str(out), "batch": str(batch.path), "wrapper": batch.wrapper,
                        "profile": profile.name, "profile_source": str(profile.source), "backend": profile.backend,
                        "started": run.started.isoformat(), "task_directory": str(run.run_dir),
                        "uploads": [u.summary() for u in run.code]})
    if run.perf:
        run.summary["performance_report"] = None       # set once written (nothing to run: none)
    recombiner = None
    try:
        # its group partials, only there; a damaged task is said once, by merge() below
        recombiner = Recombiner(out, task_directory=run.run_dir, warn_damaged=False)

        rerun: dict[int, dict] = {}      # journaled tasks whose output is damaged: they run again now
        room = preflight.RoomCheck(out)

        def merge(i: int, result: dict, resumed: bool = False) -> None:
            room(result["epc_file"])
            # a journaled result found damaged is not left out but run again in this run: nothing
            # after it is merged until its new result is (the merge stays in task order)
            recombiner.offer(i, result["epc_file"], result["uuid_list"], result.get("partial"), rerunnable=resumed)
            for j, why in recombiner.take_damaged().items():
                # left out of the model: a failed task, journaled so (a resume runs it again), its
                # files kept (the run is not complete)
                results[j].update(success=False, error=f"DamagedOutput: {why}", epc_file=None)
                journal.record(results[j])
                report.warn(f"task {j}{_named(batch.names[j])}: {why}: left out of the model and counted "
                            f"failed; run the same command again to run it again")
            for j, why in recombiner.take_to_rerun().items():
                # journaled not done before it is sent: a resume after this run is cut runs it again.
                # Its damaged files stay (removed with the task folder); its rerun writes its own.
                del results[j]
                journal.record({"index": j, "name": batch.names[j], "success": False, "epc_file": None,
                                "uuid_list": [], "error": f"DamagedOutput: {why}"})
                report.reopen()
                report.warn(f"task {j}{_named(batch.names[j])}: {why}: it runs again in this run")
                rerun[j] = batch.tasks[j]
            if i in results:
                # merged: what the report needs is all that is kept (a whole record, with its
                # uuid list and paths, is ~2 KB: held for every task of a long run, it added up)
                results[i] = task_row(results[i])

        for i in sorted(results):
            interrupts.raise_if_requested()     # merging a long journal takes minutes: a Ctrl-C stops it
            merge(i, results[i], resumed=True)
        # the tasks not journaled, and those just found damaged
        todo = {i: kwargs for i, kwargs in enumerate(batch.tasks) if i not in results}
        rerun.clear()

        def more() -> dict[int, dict]:
            """Journaled tasks found damaged once the cluster's results reached them (they waited
            behind a task that had not run): sent in this run too."""
            taken = dict(rerun)
            rerun.clear()
            return taken

        def journal_first(records: list[dict]) -> None:
            """A group's final records, journaled before any is merged: a Ctrl-C during a merge
            (ms per task) then costs a resume nothing that came back (run_on_client's on_final)."""
            for result in records:
                result["name"] = batch.names[result["index"]]
                result["resumed"] = False
            journal.record_all(records)

        def on_result(result: dict) -> None:
            i = result["index"]
            results[i] = result
            merge(i, result)
            if result.get("partial") and result.get("lost_workers") and not run.keep:
                # its group ran again after a worker died holding it: the files a lost attempt left
                # are never read (only after the journal's records: every partial named is known)
                recombiner.remove_lost_attempts(result["partial"])
            report.advance(result, batch.names[i])

        if todo:
            run.run_dir.mkdir(parents=True, exist_ok=True)
            _run_on_cluster(run, todo, on_result, journal_first, report, more)
        elif run.perf:
            report.info(f"nothing left to run: no performance report written at {run.perf}")
        interrupts.raise_if_requested()     # a Ctrl-C that arrived while nothing could raise it
        complete = len(results) == len(batch.tasks) and all(r["success"] for r in results.values())
        # Publish, report, journal and cleanup are one unit that no signal cuts: cut, it left a new
        # OUT beside the old run's report, or a finished run that said "resume" with its journal gone.
        with interrupts.shielded(FINISHING):
            partial = _publish(recombiner, out, complete, run.overwrite)
            return _finish(run, recombiner, partial)
    except KeyboardInterrupt:
        recombiner and recombiner.abort()
        raise Interrupted("interrupted: cluster torn down, nothing written at OUT; "
                          "run the same command again to resume") from None
    except RuntimeError as e:
        recombiner and recombiner.abort()
        if preflight.is_disk_full(e):
            raise OutputError(f"output {out}: no space left on device while merging; nothing was written "
                              f"at OUT, finished tasks are kept: free space and run the same command to resume") from None
        raise
    except BaseException:
        recombiner and recombiner.abort()
        raise
    finally:
        report.close()


def _finish(run: RunState, recombiner: Recombiner, partial: Path | None) -> LaunchResult:
    """After the publish: the report, the journal (gone once complete), the task files."""
    out = run.out
    tasks = [task_row(run.results[i]) for i in sorted(run.results)]
    for t in tasks:
        if t["name"] is None:
            t["name"] = run.batch.names[t["index"]]
    ok = all(t["success"] for t in tasks)
    exit_code = ExitCode.OK if ok else ExitCode.TASKS_FAILED
    run.summary.update(finished=dt.datetime.now(dt.timezone.utc).isoformat(),
                       wall_seconds=round(time.monotonic() - run.t0, 3),
                       recombine_seconds=round(recombiner.seconds, 3), exit_code=exit_code,
                       task_files_kept=(not ok) or run.keep, partial_output=partial and str(partial))
    report_file = write_report(out, run.summary, tasks)
    if ok and run.previous and run.previous.get("partial_output") == str(partial_path(out)):
        for stale in (partial_path(out), h5_of(partial_path(out))):   # an earlier run's, now superseded
            stale.unlink(missing_ok=True)
    if ok:
        # The task folder's path is every run's on OUT, and a launch on OUT may start the moment the
        # journal is unlinked (it makes and locks a new one): set aside while OUT is still ours,
        # removed from there (minutes, with many files on a shared filesystem)
        aside = None if run.keep else _set_aside(run.run_dir)
        run.journal.remove()           # nothing left to resume: the output is complete
        if not run.keep:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
            if not run.profile.storage.get("shared_directory"):
                _remove_if_empty(run.shared)      # the default folder beside OUT
    return LaunchResult(output=out, report=report_file, exit_code=exit_code,
                        succeeded=sum(t["success"] for t in tasks),
                        failed=sum(not t["success"] for t in tasks),
                        resumed=sum(bool(t.get("resumed")) for t in tasks), tasks=tasks, partial=partial)


#: a completed run's task folder, renamed for removal: run_dir's name, this, 8 hex digits
ASIDE = ".removing-"


def _set_aside(run_dir: Path) -> Path | None:
    """Rename the task folder for removal; None when it is not there. One that cannot be renamed
    is removed where it is (OUT is still this run's: nothing else writes there yet)."""
    aside = run_dir.with_name(f"{run_dir.name}{ASIDE}{secrets.token_hex(4)}")
    try:
        os.rename(run_dir, aside)
        return aside
    except FileNotFoundError:
        return None
    except OSError:
        shutil.rmtree(run_dir, ignore_errors=True)
        return None


def _remove_set_aside(run_dir: Path) -> None:
    """Task folders of earlier runs on OUT set aside and not removed (their launcher was killed
    while removing them): exactly run_dir's name, ASIDE, 8 hex digits; never a pattern that could
    reach another output's."""
    try:
        entries = list(os.scandir(run_dir.parent))
    except OSError:
        return
    for entry in entries:
        tail = entry.name[len(run_dir.name) + len(ASIDE):]
        if (entry.name.startswith(run_dir.name + ASIDE) and len(tail) == 8
                and all(c in "0123456789abcdef" for c in tail) and entry.is_dir(follow_symlinks=False)):
            shutil.rmtree(entry.path, ignore_errors=True)


def _tidy_staging_before_checks(out: Path) -> bool:
    """OUT's staging folders left by killed launchers, dealt with (remove_stale_staging) before OUT's
    files are checked, under OUT's existing journal's lock: a publish a killed launcher left half
    done had moved OUT's model aside (OUT missing, or a new .h5 there without its EPC: the ownership
    check would call it a file resqmp did not write) and its journal is still there. False when it
    could not be done here (no journal, or a launch holds it): the locked launch does it then."""
    with locked_if_there(out) as held:
        if held:
            remove_stale_staging(out)
        return held


def _publish(recombiner: Recombiner, out: Path, complete: bool, overwrite: bool) -> Path | None:
    """A fully successful run replaces OUT. Any other run never replaces an existing OUT (a worse
    model must not replace a better one): its model goes beside it, at outputs.partial_path.
    Returns that path, or None when the model went to OUT (no OUT before: resqpy's behaviour)."""
    preflight.check_ownership(out, overwrite)   # again: a file may have appeared there meanwhile
    if complete or not os.path.lexists(out):
        recombiner.publish()
        return None
    return recombiner.publish(partial_path(out))


def _run_on_cluster(run: RunState, todo: dict[int, dict], on_result, on_final, report: ProgressReport,
                    more=None) -> None:
    profile, batch, summary = run.profile, run.batch, run.summary
    scaling = profile.scaling
    task_cfg = profile.tasks
    phases = summary.setdefault("phase_seconds", {})
    mark = time.monotonic()

    def lap(phase: str) -> None:         # seconds since the previous phase ended
        nonlocal mark
        now = time.monotonic()
        phases[phase], mark = round(now - mark, 3), now

    stack = interrupts.Teardown()      # closing the cluster runs to its end, whatever signals arrive
    with stack:
        stack.enter_context(dask.config.set({key: ours for key, (default, ours) in LAUNCHER_DASK_CONFIG.items()
                                             if dask.config.get(key, None) == default}))   # undone on exit
        # Backends and distributed's nannies change this process's environment and dask config
        # (OMP_NUM_THREADS=1 among them); a caller of launch() gets its process back as it was.
        stack.enter_context(_process_state_restored())
        try:
            cluster = run.backend.start()
            stack.callback(_close_quietly, cluster)
            client = cluster.connect()
            stack.callback(_close_quietly, client)
        except ResqmpError:
            raise                # already one line with its own exit code (e.g. a profile error)
        except Exception as e:   # noqa: BLE001 - one line, not a traceback
            raise ClusterError(f"profile {profile.source}: the {profile.backend} cluster did not start: "
                               f"{type(e).__name__}: {e}") from e
        for warning in cluster.warnings:
            report.warn(warning)
        summary["dashboard"], about = dashboard_mod.describe(client, cluster)
        report.info(f"{profile.backend} cluster up ({profile.name}); {about[0]}")
        for line in about[1:]:
            report.info(line)
        # workers that outlive the run (an external scheduler's) get their own logging back at its end
        stack.callback(register_logging(client, profile, workers_outlive_run=not cluster.manages_workers))
        # tasks.upload / --upload: on every worker, also those joining later, before any task
        shipment = upload.ship(client, list(run.code), workers_outlive_run=not cluster.manages_workers)
        stack.callback(shipment.withdraw)
        # everything from here on, warm-up and every task, is in the report (exits before the client)
        stack.enter_context(perf_report.recorded(run.perf, summary, report.info))
        if "adaptive" in scaling:
            adaptive = scaling["adaptive"]
            cluster.adapt(minimum=max(1, adaptive.get("minimum", 0)), maximum=min(adaptive["maximum"], len(todo)))
        else:
            cluster.scale(min(int(scaling.get("workers", 1)), len(todo)))
        lap("cluster_start")
        _wait_for_first_worker(client, cluster, float(scaling.get("worker_timeout", 300)), profile)
        seen = preflight.check_workers_see(client, run.shared, batch.input_paths(), planned=len(cluster.plan),
                                           timeout=float(scaling.get("worker_timeout", 300)))
        preflight.check_wrapper_on_workers(client, batch.wrapper, shipment.plugin, shipment.digests)
        summary["first_worker"] = seen["worker"]
        lap("first_worker")
        summary["numba_warm"] = _warm_first_worker(client, seen["worker"], batch.wrapper)
        lap("warm")
        report.begin()
        stack.enter_context(_startup_heap_frozen())
        # tasks per Dask task (tasks.group_size); auto decides after timing the first tasks
        summary["group_size"] = run_on_client(
            client, batch.wrapper, todo, str(run.run_dir), on_result, retries=int(task_cfg.get("retries", 2)),
            retry_on_error=bool(task_cfg.get("retry_on_error", False)), timeout=task_cfg.get("timeout"),
            group_size=task_cfg.get("group_size", "auto"),
            workers=_planned_workers(scaling) if cluster.manages_workers else None,
            stall_after=task_cfg.get("stall_after", STALL_AFTER),
            on_stall=lambda idle, running, waiting, nxt: report.stalled(idle, running, waiting, nxt, batch.names),
            premerge=task_cfg.get("premerge", "auto"),   # group partials (resqmp.premerge)
            on_final=on_final,        # the journal: every record fetched, before any merge
            more=more)                # journaled tasks found damaged meanwhile: they run too
        lap("tasks")
    lap("teardown")


def _planned_workers(scaling: dict) -> int:
    """How many workers share the batch, for tasks.group_size auto: the profile's count (adaptive:
    its maximum). An external scheduler's are not planned here: run_on_client counts its task slots."""
    if "adaptive" in scaling:
        return int(scaling["adaptive"]["maximum"])
    return int(scaling.get("workers", 1))


def _warm_first_worker(client, worker: str, wrapper: str) -> dict | None:
    """Fill the numba cache on one worker before the batch, so workers do not compile
    concurrently into one cache (numba#4807) and each first task loads compiled code."""
    from resqmp.warm import label_for, warm_numba_cache
    label = label_for(wrapper)
    if label is None:
        return None
    result = client.submit(warm_numba_cache, (label,), workers=[worker], allow_other_workers=False,
                           pure=False).result()
    return {k: result.get(k) for k in ("cache_enabled", "cache_dir", "seconds", "errors", "total_seconds")}


def _wait_for_first_worker(client, cluster, timeout: float, profile) -> None:
    """Wait for one worker; give up at once when the cluster knows none will come (jobs refused,
    workers that died at start-up)."""
    deadline = time.monotonic() + timeout
    failure = None
    while True:
        try:
            client.wait_for_workers(1, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return
        except TimeoutError:
            pass
        interrupts.raise_if_requested()
        failure = cluster.startup_failure()
        if failure or time.monotonic() >= deadline:
            break
    view = " | ".join(line.strip() for line in cluster.scheduler_view().strip().splitlines() if line.strip())
    what = failure or f"no worker arrived within {timeout:.0f} s (profile {profile.name}, scaling.worker_timeout)"
    teardown = cluster.teardown
    raise ClusterError(what + (f"; scheduler says: {view}" if view else "") + (f"; {teardown}" if teardown else ""))


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


@contextmanager
def _startup_heap_frozen():
    """The launcher's startup heap (imports, cluster, client: ~300k tracked objects) out of the
    cyclic garbage collector's sight while the tasks run: each full collection there rescanned it
    all (0.13 s each, ~0.14 ms/task at N=1024; bench/RESULTS.md wave 11). What survives each full
    collection of the tasks phase joins it (the merge's state grows with every task: at N=16384,
    11 full collections rescanning it took 1.2 s); a full collection has just found every cycle
    that was garbage, so only objects alive then are kept from it; those that turn into cyclic
    garbage later are kept too, so once the frozen objects outnumber twice those of the last
    collection that looked at them all, the next one looks at them all again. All given back after, and
    collected as before. A process that froze its own heap (a library caller) is left as it is."""
    if gc.get_freeze_count():
        yield
        return

    seen = {"whole": 0}        # frozen objects after the last collection that looked at them all

    def after_full_collection(phase, info):
        if phase != "stop" or info["generation"] != 2:
            return
        frozen = gc.get_freeze_count()
        if frozen and frozen > 2 * seen["whole"]:
            # what it froze since has outgrown what it looked at last: some of it may be garbage
            # now (futures, task states, tracebacks alive at a full collection, gone after), held
            # until the end otherwise. The next full collection looks at everything again, so
            # the garbage kept is bounded by the heap, and the rescans cost O(heap) in all.
            gc.unfreeze()
            return
        gc.freeze()
        if not frozen:
            seen["whole"] = gc.get_freeze_count()

    gc.freeze()
    seen["whole"] = gc.get_freeze_count()
    gc.callbacks.append(after_full_collection)
    try:
        yield
    finally:
        gc.callbacks.remove(after_full_collection)
        gc.unfreeze()


@contextmanager
def _process_state_restored():
    environ, config = dict(os.environ), copy.deepcopy(dask.config.config)
    try:
        yield
    finally:
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)
        dask.config.config.clear()
        dask.config.config.update(config)


def _close_quietly(obj) -> None:
    try:
        obj.close()
    except Exception:   # noqa: BLE001 - teardown must go on
        log.debug("error closing %r", obj, exc_info=True)


def _named(name: str | None) -> str:
    return f" ({name})" if name else ""
