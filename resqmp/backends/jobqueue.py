"""Batch-scheduler backends (slurm, sge, pbs, lsf) on dask-jobqueue.

The scheduler runs in the launching process (a login node, or a batch job of its own: see
hpc-templates/); every worker is one batch job whose script dask-jobqueue writes. resqmp adds:

* the worker environment (NUMBA_NUM_THREADS=1, ...) as `export` lines at the top of the job script
  prologue, so it is set before the worker interpreter starts and numba is imported; only $NAME /
  ${NAME} expand there (worker_env.shell_exports); the profile's own prologue lines (module load,
  venv activation) follow and may override it;
* TLS on by default (tls.py);
* the dashboard off and the scheduler's HTTP endpoint reduced to /health on loopback, unless the
  profile asks for a dashboard (cluster.scheduler_options.dashboard_address), and then the ssh
  line that reaches it from the user's own machine (dashboard_access);
* worker retirement before the job's walltime (--lifetime with --lifetime-stagger, derived from
  walltime unless the profile gives --lifetime itself), and replacement of workers that retired
  while the cluster still wants them, so a batch may outlast one walltime;
* tasks.retries as the scheduler's allowed-failures;
* submission errors, the scheduler's view of the cluster's jobs and their logs (diagnostics.py)
  for the message shown when no worker arrives, and at once when every job ended without one.

What differs between schedulers is described once per scheduler in schedulers.py.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
import weakref
from typing import Any

import dask
import resqmp.backends.dask_jobqueue_import  # noqa: F401 (first: keeps the SIGINT handler)
from dask_jobqueue.core import Job, JobQueueCluster
from distributed import Client

from resqmp.backends import diagnostics, jobs, tls
from resqmp.backends.checks import Checker
from resqmp.backends.schedulers import NO_LIMIT, SCHEDULERS, Scheduler, whoami
from resqmp.errors import ClusterError, ProfileError
from resqmp.paths import absolute_directory, expand
from resqmp.worker_env import control_character, shell_exports

log = logging.getLogger(__name__)

# Keyword arguments that are not profile options: resqmp sets them (n_workers: scaling:), they
# cannot be written in YAML (classes, loops), or dask-jobqueue rejects/deprecates them.
_EXCLUDED = {
    "self", "kwargs", "base_class_kwargs", "job_kwargs",
    "scheduler", "name", "n_workers", "job_cls", "loop", "asynchronous", "scheduler_cls",
    "dashboard_address", "host",            # jobqueue wants them inside scheduler_options
    "config_name",                          # would select another jobqueue.yaml section
    "extra", "env_extra", "job_extra", "header_skip",   # deprecated names of the options below
}
# Options of the cluster object (scheduler side); the rest go to the Job class.
_CLUSTER_ONLY = {"security", "shared_temp_directory", "silence_logs", "scheduler_options"}

RENDER_SCHEDULER = "<scheduler-host>:<port>"          # after tls:// or tcp://
RENDER_WORKER_NAME = "<worker-name>"
RENDER_TLS_DIR = tls.RENDER_TLS_DIR
TLS_PREFIX = tls.TLS_PREFIX
WORKER_PRELOAD = "resqmp.worker_preload"
STATUS_INTERVAL = 5.0     # seconds between asking the scheduler whether the jobs still live


# --------------------------------------------------------------------------- options

def _params(func) -> set[str]:
    return {n for n, p in inspect.signature(func).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def options_for(backend: str) -> set[str]:
    """Keys allowed under `cluster:` for one scheduler."""
    job_base = SCHEDULERS[backend].cluster_class.job_cls
    names = _params(JobQueueCluster.__init__) | _params(Job.__init__) | _params(job_base.__init__)
    return names - _EXCLUDED


def cluster_options(backend: str | None = None) -> set[str]:
    """Union over the four schedulers: the profile check lets the backend name a key that belongs
    to another scheduler (JobqueueBackend says which)."""
    out: set[str] = set()
    for name in SCHEDULERS:
        out |= options_for(name)
    return out


# dask-jobqueue's config names that are not the option's name with dashes (and deprecated ones)
_CONFIG_NAMES = {"job_name": ("name",), "job_script_prologue": ("job-script-prologue", "env-extra"),
                 "job_extra_directives": ("job-extra-directives", "job-extra"),
                 "job_directives_skip": ("job-directives-skip", "header-skip"),
                 "worker_extra_args": ("worker-extra-args", "extra")}


def floor(backend: str):
    """Every option may come from the site's jobqueue.<scheduler>.<key>, else resqmp's defaults."""
    from resqmp.backends import Floor
    keys = {option: tuple(f"jobqueue.{backend}.{name}" for name in
                          _CONFIG_NAMES.get(option, (option.replace("_", "-"),))) for option in options_for(backend)}
    return Floor(keys, lambda above, profile: defaults(backend, above, profile))


def defaults(backend: str, above: dict, profile: dict) -> dict:
    """resqmp's defaults, used where neither the profile nor the site's dask config sets a value."""
    shared = (profile.get("storage") or {}).get("shared_directory")
    out = {
        "cores": 1,
        # one single-threaded worker process per core: resqpy wrappers and numba run one task per interpreter
        "processes": above.get("cores") or 1,
        "memory": "4GiB",
        "walltime": SCHEDULERS[backend].default_walltime,
        "job_name": "resqmp-worker",
        "death_timeout": 120,
        "local_directory": "${TMPDIR:-/tmp}",          # node-local scratch, expanded by the job's shell
        "security": True,                              # TLS, a temporary certificate per run
    }
    if shared:
        out["log_directory"] = str(shared).rstrip("/") + "/logs"
    return out


def walltime_seconds(backend: str, walltime: Any) -> float | None:
    """Seconds in `walltime` as `backend` reads it; NO_LIMIT (infinite) for none; None if it does
    not take the form."""
    return SCHEDULERS[backend].walltime_seconds(walltime)


def lifetime_args(backend: str, walltime: Any) -> list[str]:
    """--lifetime/--lifetime-stagger so a worker retires (its tasks and data handed over) before
    the scheduler kills its job. Stagger: 5% of walltime (at most 5 min); a further margin of 10%
    (at most 10 min) covers the job's start-up and the retirement itself. No arguments for a
    walltime that sets no limit: there is nothing to retire before."""
    scheduler = SCHEDULERS[backend]
    secs = scheduler.walltime_seconds(walltime)
    if secs is None:
        raise ProfileError(f"cluster.walltime {walltime!r}: not a {backend} walltime resqmp understands "
                           f"(write it as {scheduler.walltime_forms}), or give worker_extra_args "
                           f"['--lifetime', ..., '--lifetime-stagger', ...] yourself")
    if secs == NO_LIMIT:
        return []
    secs = int(secs)
    stagger = min(int(secs * 0.05), 300)
    margin = min(int(secs * 0.10), 600)
    lifetime = secs - margin - stagger
    if lifetime < 10:
        raise ProfileError(f"cluster.walltime {walltime!r}: too short for a worker to start and retire")
    return ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]




def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ProfileError(f"cluster.{key}: expected a list, got {type(value).__name__}")


#: cluster options that dask-jobqueue takes as lists (one string given: a list of one)
_LIST_OPTIONS = ("job_extra_directives", "job_directives_skip", "worker_extra_args", "job_script_prologue")

#: cluster options that never reach the job script as text (the prologue is the profile's own
#: shell code, line by line)
_NOT_SCRIPT_TEXT = {"job_script_prologue", "scheduler_options", "security"}


def _check_one_line(profile) -> None:
    """dask-jobqueue writes option values into lines of the job script (`#SBATCH -J NAME`, the
    worker's command line): a line break there would make the rest a command of the job, run on
    the compute node, or a directive of its own. Data in a profile is never code."""
    for key, value in profile.cluster.items():
        if key in _NOT_SCRIPT_TEXT:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            char = isinstance(item, str) and control_character(item)
            if char:
                raise ProfileError(f"profile {profile.source}: cluster.{key}: {item!r} holds a line break or "
                                   f"control character ({char}); it is written into one line of the job "
                                   f"script, where the rest would become a command or a directive of its own")


# The one setting that turns the dashboard on (README, "Dashboard"): on the launcher host's
# loopback, reached from elsewhere through ssh (WorkerCluster.dashboard_access).
DASHBOARD_SETTING = "cluster.scheduler_options.dashboard_address=127.0.0.1:8787"


# --------------------------------------------------------------------------- the cluster

class WorkerCluster(JobQueueCluster):
    """A dask-jobqueue cluster whose workers are jobs of `scheduler`, with what resqmp needs to
    know about them kept on the instance."""

    teardown = "jobs cancelled"
    manages_workers = True

    def __init__(self, batch_scheduler: Scheduler, tls_dir: str | None, dashboard: dict, **kwargs):
        self.batch_scheduler = batch_scheduler
        self.tls_dir = tls_dir                  # removed when the cluster closes
        self.dashboard_options = dashboard      # the profile's scheduler_options
        self.started = time.time()
        self.warnings: list[str] = []
        self._last_status = 0.0
        super().__init__(job_cls=batch_scheduler.job_class, **kwargs)

    # --- what run.py uses (backends.Cluster)

    def connect(self) -> Client:
        return Client(self)

    def job_ids(self) -> list[str]:
        return [str(job.job_id) for job in list(self.workers.values()) if getattr(job, "job_id", None)]

    def submission_errors(self) -> list[str]:
        return [job.submit_error for job in list(self.workers.values()) if getattr(job, "submit_error", None)]

    def _jobs_seen(self) -> diagnostics.JobsSeen:
        dummy = self._dummy_job
        return diagnostics.JobsSeen(self.batch_scheduler, self.job_ids(), self.submission_errors(),
                                    dummy.log_directory, dummy.job_name or "worker", self.started)

    def startup_failure(self) -> str | None:
        """Why no worker will come: refused submissions, or every job ended without a worker
        (the scheduler is asked at most every STATUS_INTERVAL seconds)."""
        if self.submission_errors():
            return "the worker jobs could not be submitted"        # scheduler_view says why
        if time.monotonic() - self._last_status < STATUS_INTERVAL or self.scheduler_info.get("workers"):
            return None
        self._last_status = time.monotonic()
        return diagnostics.ended_before_a_worker_came(self._jobs_seen())

    def scheduler_view(self) -> str:
        return diagnostics.view(self._jobs_seen())

    # --- behaviour

    def _update_worker_status(self, op, msg):
        # A worker that retired (--lifetime) or whose job ended is dropped from self.workers
        # after distributed.deploy.lost-worker-timeout; if the cluster still plans it (scale(n)
        # or adapt), submit a new job for it. Adaptive alone does not: its plan is unchanged.
        if op == "remove" and msg not in self.scheduler_info.get("workers", {}):
            # a worker this cluster never heard of (it joined and left between two updates, as a
            # job at the end of a short walltime can): distributed's handler raises KeyError on
            # it, which ends its watch of the scheduler: no worker after that was seen to join
            # or leave, and none was replaced
            return
        super()._update_worker_status(op, msg)
        if op == "remove":
            delay = dask.utils.parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
            ref = weakref.ref(self)

            def replace():
                cluster = ref()
                if cluster is None or cluster.status.name not in ("running",):
                    return
                if set(cluster.worker_spec) - set(cluster.workers):
                    log.info("replacing a worker job that ended while the cluster still wants it")
                    cluster.loop.add_callback(cluster._correct_state)

            asyncio.get_running_loop().call_later(delay + 0.5, replace)

    dashboard_off = f"every user of this host could open it; turn it on with --set {DASHBOARD_SETTING}"

    def dashboard_access(self, link: str) -> str:
        """The ssh tunnel from one's own machine to a dashboard on this host's loopback."""
        from urllib.parse import urlsplit
        parts = urlsplit(link)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not parts.port:
            return ""                       # bound to a reachable address: the link works as it is
        host = socket.getfqdn()
        port = parts.port
        return (f"dashboard from your own machine: ssh -N -L {port}:127.0.0.1:{port} {whoami()}@{host} "
                f"(add -J LOGIN-NODE when {host} is a compute node), then open http://localhost:{port}{parts.path}")

    @property
    def dashboard_link(self):
        options = self.dashboard_options
        if not options.get("dashboard", True):
            return ""                       # off (resqmp's default on shared machines)
        link = super().dashboard_link
        host = str(options.get("dashboard_address", "")).rpartition(":")[0]
        port = self.scheduler_info.get("services", {}).get("dashboard")
        if host not in ("", "0.0.0.0", "[::]", "::") and port:
            from distributed.utils import format_dashboard_link
            return format_dashboard_link(host, port)
        return link

    async def _close(self):
        try:
            await super()._close()
        finally:
            if self.tls_dir:
                shutil.rmtree(self.tls_dir, ignore_errors=True)


# --------------------------------------------------------------------------- the backend

class JobqueueBackend:
    """A profile for one batch scheduler; building it checks the options (ProfileError)."""

    def __init__(self, profile, worker_env: dict[str, str]):
        self.profile = profile
        self.scheduler = SCHEDULERS[profile.backend]
        self.worker_env = worker_env
        self._check_keys()
        _check_one_line(profile)
        self._check_values()
        self.shared = self._shared_dir()
        self._check_directive_values()
        configured = profile.cluster.get("shared_temp_directory")
        # dask-jobqueue's own knob for where the TLS folder goes, if the profile sets one
        self.tls_base = expand(str(configured), "cluster.shared_temp_directory") if configured else self.shared

    def _check_keys(self) -> None:
        allowed = options_for(self.profile.backend)
        for key in self.profile.cluster:
            if key not in allowed:
                others = [b for b in SCHEDULERS if key in options_for(b)]
                raise ProfileError(
                    f"profile {self.profile.source}: cluster.{key} is not an option of "
                    f"{self.scheduler.cluster_class.__name__} (backend {self.profile.backend}; it is one for "
                    f"{', '.join(others)})")

    def _check_values(self) -> None:
        cfg = self.profile.cluster
        check = Checker(cfg, self.profile.origin)
        for key in _LIST_OPTIONS:
            check.words(key)
        check.mapping("scheduler_options")
        cores = check.count("cores")
        processes = check.count("processes")
        if cores and processes and processes > cores:
            check.fail("processes", processes, f"at most cluster.cores ({cores}): each worker process "
                                               f"is single-threaded and needs a core of its own")
        check.memory("memory", processes)
        check.boolean("nanny")
        # scheduler-specific options that dask-jobqueue formats or computes with
        backend = self.profile.backend
        if backend == "slurm":
            check.count("job_cpu")
            # sbatch --mem: megabytes, or a number with K, M, G or T (0: all of the node's memory)
            check.pattern("job_mem", r"[0-9]+[KMGTkmgt]?", "a SLURM --mem value such as 4096 (megabytes) or 4G")
        if backend == "lsf":
            check.count("ncpus")
            check.count("mem", expected="a number of bytes (an integer; or set cluster.memory instead)")
            check.pattern("lsf_units", r"(?i)[kmgtpez]b", "one of kb, mb, gb, tb, pb, eb, zb")
            check.boolean("use_stdin")
        check.seconds("death_timeout")
        check.port("scheduler_options.port")
        check.address("scheduler_options.dashboard_address")
        sched = cfg.get("scheduler_options") or {}
        if "host" not in sched:
            # the scheduler, in this process, binds to `interface` too unless scheduler_options
            # gives its own: it must be one of this host's
            check.interface_here("scheduler_options.interface" if "interface" in sched else "interface")
        try:
            self.lifetime = self._lifetime()
        except ProfileError as e:
            raise ProfileError(f"{self.profile.origin(('cluster', 'walltime'))}: {e}") from None

    def _check_directive_values(self) -> None:
        """The log folder, the job name and (SGE) the working directory go into directive lines,
        where the scheduler reads some characters its own way (an unquoted space ends the value;
        a `#` silently did: the logs went to another file). Folders are double-quoted for SLURM
        and SGE (jobs.QuotedLogDirectives); a value holding a character that the scheduler still
        reads its own way (schedulers.directive_trouble) is refused, naming the setting."""
        cluster, scheduler = self.profile.cluster, self.scheduler
        prefix = scheduler.directive_prefix

        def refuse(key: tuple[str, ...], value: str, trouble: str, hint: str) -> None:
            raise ProfileError(f"{self.profile.origin(key)}: {'.'.join(key)} {value!r}: {trouble}; {hint}")

        log_dir = cluster.get("log_directory")
        if log_dir and self.profile.origin(("cluster", "log_directory")) != "resqmp default":
            path = expand(str(log_dir), "cluster.log_directory")
            trouble = scheduler.directive_trouble(path)
            if trouble:
                refuse(("cluster", "log_directory"), path, trouble, "choose a folder without it")
        else:
            trouble = scheduler.directive_trouble(os.path.join(self.shared, "logs"))
            if trouble:
                refuse(("storage", "shared_directory"), self.shared, trouble,
                       f"the job logs go to its logs folder ({prefix} -o/-e): set cluster.log_directory "
                       f"to a folder without it, or choose another shared directory")
        name = cluster.get("job_name")
        trouble = name is not None and scheduler.directive_trouble(str(name), name=True)
        if trouble:
            refuse(("cluster", "job_name"), str(name), trouble, "choose a name without it")
        # resqmp's own directives (SGE: -wd <shared directory>)
        probe = {k: _as_list(cluster.get(k), k) for k in ("job_directives_skip", "job_extra_directives")}
        scheduler.adjust_options(probe, self.shared)
        if any(d.split(None, 1)[-1] == jobs.directive_word(self.shared) for d in probe["job_extra_directives"]
               if d not in _as_list(cluster.get("job_extra_directives"), "job_extra_directives")):
            trouble = scheduler.directive_trouble(self.shared)
            if trouble:
                refuse(("storage", "shared_directory"), self.shared, trouble,
                       f"jobs start there ({prefix} -wd): choose another shared directory, or give "
                       f"cluster.job_extra_directives a -wd of your own")

    def _lifetime(self) -> list[str]:
        """resqmp's --lifetime arguments, unless the profile gives its own."""
        extra = [str(a) for a in _as_list(self.profile.cluster.get("worker_extra_args"), "worker_extra_args")]
        walltime = self.profile.cluster.get("walltime")
        if "--lifetime" in extra or walltime is None:
            return []
        return lifetime_args(self.profile.backend, walltime)

    def _shared_dir(self) -> str:
        configured = self.profile.storage.get("shared_directory")
        if not configured:
            raise ProfileError(f"profile {self.profile.source}: storage.shared_directory must be set for backend "
                               f"{self.profile.backend}: a folder every compute node sees (e.g. under /home or "
                               f"/scratch); task files, TLS files and job logs go there")
        return absolute_directory(str(configured), "storage.shared_directory")

    @property
    def retries(self) -> int:
        return int(self.profile.tasks.get("retries", 2))

    def kwargs(self, tls_dir: str | None) -> dict[str, Any]:
        """Keyword arguments of the cluster, as start() passes them."""
        kw = {k: v for k, v in self.profile.cluster.items() if v is not None}
        for key in _LIST_OPTIONS:
            if key in kw:
                # dask-jobqueue iterates them: one string would be one directive per character
                kw[key] = [str(item) for item in _as_list(kw[key], key)]
        kw["security"] = tls.security_for(kw.get("security", True), tls_dir)
        kw["shared_temp_directory"] = self.tls_base

        # $NAME / ${NAME} expand in the job's shell, nothing else does (worker_env.shell_exports)
        exports = shell_exports(self.worker_env)
        kw["job_script_prologue"] = exports + _as_list(kw.get("job_script_prologue"), "job_script_prologue")

        extra = [str(a) for a in _as_list(kw.get("worker_extra_args"), "worker_extra_args")]
        if WORKER_PRELOAD not in extra:
            # resqpy imported when the worker starts, not in its first task (~2 s)
            extra += ["--preload", WORKER_PRELOAD]
        kw["worker_extra_args"] = extra + self.lifetime

        log_dir = kw.get("log_directory")
        kw["log_directory"] = expand(str(log_dir), "cluster.log_directory") if log_dir else \
            os.path.join(self.shared, "logs")

        self.scheduler.adjust_options(kw, self.shared)

        sched = dict(kw.get("scheduler_options") or {})
        if "dashboard_address" not in sched:
            # no dashboard: it would be open to every user of the login node
            sched.setdefault("dashboard", False)
            sched["dashboard_address"] = "127.0.0.1:0"
        kw["scheduler_options"] = sched
        return kw

    def render(self) -> str:
        """The job script start() would submit for each worker, with three run-specific values
        shown as placeholders: the scheduler address, the worker name and the TLS folder's random
        suffix. Nothing is started, submitted or written."""
        # the TLS folder's placeholder goes in after the script is built: the TLS file names are
        # quoted as shell words (jobs.QuotedWorkerCommand), and `<run>` alone would make them quoted
        stand_in = f"{TLS_PREFIX}{secrets.token_hex(8)}"
        kw = self.kwargs(os.path.join(self.tls_base, stand_in))
        protocol = kw.get("protocol") or ("tls://" if kw.get("security") is not None else "tcp://")
        return self._job_script(kw, protocol + RENDER_SCHEDULER, RENDER_WORKER_NAME).replace(stand_in, RENDER_TLS_DIR)

    def _job_script(self, kw: dict[str, Any], address: str, name: str) -> str:
        job_kw = {k: v for k, v in kw.items() if k not in _CLUSTER_ONLY}
        security = kw.get("security")
        # what JobQueueCluster.__init__ hands its Job class (dask_jobqueue.core, 0.9)
        job_kw["protocol"] = kw.get("protocol") or ("tls://" if security is not None else None)
        job_kw["security"] = security
        job_kw.setdefault("interface", None)
        job_kw["config_name"] = None
        log_dir = job_kw.get("log_directory")
        job_class = self.scheduler.job_class            # the class start() submits with
        # the Job class creates log_directory when it does not exist: render must not, so it gets an
        # empty stand-in folder whose (unique) path is then replaced by the real one
        with tempfile.TemporaryDirectory(prefix="resqmp-render-") as stand_in:
            if log_dir and not os.path.isdir(log_dir):
                job_kw["log_directory"] = stand_in
            try:
                script = job_class(address, name=name, **job_kw).job_script()
            except (TypeError, ValueError) as e:
                text = " ".join(str(e).split())          # its messages span lines; ours is one
                raise ProfileError(f"cluster: {self.scheduler.cluster_class.__name__} rejected the options: {text}") from None
            if job_kw.get("log_directory") == stand_in:
                script = script.replace(stand_in, log_dir)
                prefix = getattr(job_class, "directive_prefix", None)
                if prefix:          # as the Job class writes them for the real folder (jobs.QuotedLogDirectives)
                    script = jobs.quote_log_directives(script, prefix, log_dir)
        return script

    def start(self) -> WorkerCluster:
        """A started cluster (scheduler in this process, TLS) with no worker jobs yet."""
        if not os.path.isdir(self.tls_base):
            raise ClusterError(f"shared directory {self.tls_base}: does not exist")
        wants_tls = self.profile.cluster.get("security", True) is True
        tls_dir = tls.write_tls_files(self.tls_base) if wants_tls else None
        try:
            kw = self.kwargs(tls_dir)
            # the Job class creates it on the client otherwise with the default umask; keep it private
            os.makedirs(kw["log_directory"], mode=0o700, exist_ok=True)
            dashboard = dict(kw["scheduler_options"])
            # tasks.retries: how often this scheduler re-runs a task whose worker died
            kw["scheduler_options"] = {**kw["scheduler_options"], "allowed_failures": self.retries}
            config = {}
            if not dashboard.get("dashboard", True):
                # the scheduler's HTTP server still starts: serve only /health, no info/json/proxy pages
                config["distributed.scheduler.http.routes"] = ["distributed.http.health"]
            with dask.config.set(config):
                return WorkerCluster(self.scheduler, tls_dir, dashboard, **kw)
        except BaseException:
            if tls_dir:
                shutil.rmtree(tls_dir, ignore_errors=True)
            raise
