"""Batch-scheduler backends (slurm, sge, pbs, lsf) on dask-jobqueue.

The scheduler runs in the launching process (a login node, or a batch job of its own: see
hpc-templates/); every worker is one batch job whose script dask-jobqueue writes. resqmp adds:

* the worker environment (NUMBA_NUM_THREADS=1, ...) as `export` lines at the top of the job script
  prologue, so it is set before the worker interpreter starts and numba is imported; only $NAME /
  ${NAME} expand there (worker_env.shell_word); the profile's own prologue lines (module load,
  venv activation) follow and may override it;
* TLS on by default: a temporary certificate and key written to a fresh owner-only folder under
  storage.shared_directory (the workers read them from there), removed when the cluster closes;
* the dashboard off and the scheduler's HTTP endpoint reduced to /health on loopback, unless the
  profile asks for a dashboard (cluster.scheduler_options.dashboard_address), and then the ssh
  line that reaches it from the user's own machine (dashboard_access);
* worker retirement before the job's walltime (--lifetime with --lifetime-stagger, derived from
  walltime unless the profile gives --lifetime itself), and replacement of workers that retired
  while the cluster still wants them, so a batch may outlast one walltime;
* submission errors and the scheduler's view of the cluster's jobs (squeue, qstat, bjobs) for the
  message shown when no worker arrives.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from typing import Any

import dask
from dask_jobqueue import LSFCluster, PBSCluster, SGECluster, SLURMCluster
from dask_jobqueue.core import Job, JobQueueCluster
from distributed.deploy.spec import ProcessInterface
from distributed.security import Security

from resqmp.errors import ClusterError, ProfileError
from resqmp.worker_env import shell_exports

log = logging.getLogger(__name__)

_BASES: dict[str, type[JobQueueCluster]] = {
    "slurm": SLURMCluster,
    "sge": SGECluster,
    "pbs": PBSCluster,
    "lsf": LSFCluster,
}
_SUBMIT = {"slurm": "sbatch", "sge": "qsub", "pbs": "qsub", "lsf": "bsub"}

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
RENDER_TLS_DIR = ".resqmp-tls-<run>"
TLS_PREFIX = ".resqmp-tls-"
TEARDOWN = "jobs cancelled"

# job id -> error text of failed submissions, per scheduler address (for scheduler_view)
_SUBMIT_ERRORS: dict[str, list[str]] = {}


# --------------------------------------------------------------------------- options

def _params(func) -> set[str]:
    return {n for n, p in inspect.signature(func).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def options_for(backend: str) -> set[str]:
    """Keys allowed under `cluster:` for one scheduler."""
    base = _BASES[backend]
    names = _params(JobQueueCluster.__init__) | _params(Job.__init__) | _params(base.job_cls.__init__)
    return names - _EXCLUDED


def cluster_options() -> set[str]:
    """Union over the four schedulers (the function gets no profile); render/start then check the
    keys against the profile's own scheduler and name the ones that belong to another."""
    out: set[str] = set()
    for backend in _BASES:
        out |= options_for(backend)
    return out


def _check_keys(profile) -> None:
    allowed = options_for(profile.backend)
    for key in profile.cluster:
        if key not in allowed:
            others = [b for b in _BASES if key in options_for(b)]
            raise ProfileError(
                f"profile {profile.source}: cluster.{key} is not an option of {_BASES[profile.backend].__name__} "
                f"(backend {profile.backend}; it is one for {', '.join(others)})")


# --------------------------------------------------------------------------- walltime -> lifetime

def walltime_seconds(backend: str, walltime: Any) -> int | None:
    """Seconds in a walltime written the way the scheduler reads it, None if not understood.
    slurm: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; sge: S or H:M:S (qsub refuses M:S); pbs: [[H:]M:]S;
    lsf: [H:]M. Profiles keep the text as written (resqmp/datafile.py: 2:00:00 is no number)."""
    if walltime is None or isinstance(walltime, (bool, float)):
        return None             # no scheduler takes 1.5 (and it must not be truncated to 1)
    text = str(walltime).strip()
    if isinstance(walltime, int):
        # a bare number: minutes for slurm and lsf, seconds for sge and pbs
        return walltime * (60 if backend in ("slurm", "lsf") else 1)
    if backend == "sge" and text.count(":") == 1:
        return None
    try:
        if backend == "slurm":
            days = 0
            if "-" in text:
                d, text = text.split("-", 1)
                days = int(d)
                parts = [int(p) for p in text.split(":")]
                h, m, s = (parts + [0, 0])[:3]
            else:
                parts = [int(p) for p in text.split(":")]
                if len(parts) == 1:
                    h, m, s = 0, parts[0], 0
                elif len(parts) == 2:
                    h, m, s = 0, parts[0], parts[1]
                elif len(parts) == 3:
                    h, m, s = parts
                else:
                    return None
            return ((days * 24 + h) * 60 + m) * 60 + s
        if backend == "lsf":
            parts = [int(p) for p in text.split(":")]
            if len(parts) == 1:
                return parts[0] * 60
            if len(parts) == 2:
                return (parts[0] * 60 + parts[1]) * 60
            return None
        parts = [int(p) for p in text.split(":")]       # sge, pbs
        if len(parts) > 3:
            return None
        secs = 0
        for p in parts:
            secs = secs * 60 + p
        return secs
    except ValueError:
        return None


def lifetime_args(backend: str, walltime: Any) -> list[str]:
    """--lifetime/--lifetime-stagger so a worker retires (its tasks and data handed over) before
    the scheduler kills its job. Stagger: 5% of walltime (at most 5 min); a further margin of 10%
    (at most 10 min) covers the job's start-up and the retirement itself."""
    secs = walltime_seconds(backend, walltime)
    if secs is None:
        raise ProfileError(f"cluster.walltime {walltime!r}: not a {backend} walltime resqmp understands "
                           f"(write it as {_WALLTIME_FORMS[backend]}), or give worker_extra_args "
                           f"['--lifetime', ..., '--lifetime-stagger', ...] yourself")
    stagger = min(int(secs * 0.05), 300)
    margin = min(int(secs * 0.10), 600)
    lifetime = secs - margin - stagger
    if lifetime < 10:
        raise ProfileError(f"cluster.walltime {walltime!r}: too short for a worker to start and retire")
    return ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]


_WALLTIME_FORMS = {"slurm": "H:MM:SS, D-H:MM:SS or minutes", "sge": "H:MM:SS or seconds",
                   "pbs": "H:MM:SS or seconds", "lsf": "H:MM or minutes"}


# --------------------------------------------------------------------------- kwargs

def _expand(path: str) -> str:
    """$VARS and ~ as the launcher's shell would; $USER/$LOGNAME fall back to the account name
    (batch and container environments do not always set them)."""
    for name in ("USER", "LOGNAME"):
        if name not in os.environ and "$" + name in path.replace("{", ""):
            path = path.replace("${" + name + "}", _whoami()).replace("$" + name, _whoami())
    return os.path.expanduser(os.path.expandvars(path))


def _shared_dir(profile) -> str:
    configured = profile.storage.get("shared_directory")
    if not configured:
        raise ProfileError(f"profile {profile.source}: storage.shared_directory must be set for backend "
                           f"{profile.backend}: a folder every compute node sees (e.g. under /home or "
                           f"/scratch); task files, TLS files and job logs go there")
    return _expand(str(configured))


def _tls_base(profile) -> str:
    """Where the TLS folder goes: cluster.shared_temp_directory (dask-jobqueue's own knob for it)
    if the profile sets one, else storage.shared_directory."""
    configured = profile.cluster.get("shared_temp_directory")
    return _expand(str(configured)) if configured else _shared_dir(profile)


def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ProfileError(f"cluster.{key}: expected a list, got {type(value).__name__}")


def _security_for(profile, tls_dir: str | None) -> Security | None:
    """security: true (default) -> temporary certificate in tls_dir; false -> plain TCP;
    a mapping -> distributed.Security keyword arguments (site-issued certificate files)."""
    setting = profile.cluster.get("security", True)
    if setting is False or setting is None:
        return None
    if isinstance(setting, dict):
        try:
            return Security(**{"require_encryption": True, **setting})
        except TypeError as e:
            raise ProfileError(f"cluster.security: {e}") from None
    if setting is not True:
        raise ProfileError(f"cluster.security: expected true, false or a mapping of distributed.Security "
                           f"options, got {setting!r}")
    ca, cert, key = (os.path.join(tls_dir, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    return Security(tls_ca_file=ca, require_encryption=True,
                    tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key)


def _kwargs(profile, worker_env: dict[str, str], tls_dir: str | None) -> dict[str, Any]:
    """Keyword arguments of the dask-jobqueue cluster class, as start() passes them."""
    _check_keys(profile)
    backend = profile.backend
    kw = dict(profile.cluster)
    for key in ("cores", "memory"):
        if kw.get(key) is None and dask.config.get(f"jobqueue.{backend}.{key}", None) is None:
            raise ProfileError(f"profile {profile.source}: cluster.{key} is required for backend {backend} "
                               f"(per worker job)")
    cores = kw.get("cores") or dask.config.get(f"jobqueue.{backend}.cores")
    # one single-threaded worker process per core unless the profile says otherwise:
    # resqpy wrappers and numba are run one task per interpreter
    if kw.get("processes") is None:
        kw["processes"] = cores

    kw["security"] = _security_for(profile, tls_dir)
    shared = _shared_dir(profile)
    kw["shared_temp_directory"] = _tls_base(profile)

    # $NAME / ${NAME} expand in the job's shell, nothing else does (worker_env.shell_exports)
    exports = shell_exports(worker_env)
    kw["job_script_prologue"] = exports + _as_list(kw.get("job_script_prologue"), "job_script_prologue")

    extra = [str(a) for a in _as_list(kw.get("worker_extra_args"), "worker_extra_args")]
    if "resqmp.worker_preload" not in extra:
        # resqpy imported when the worker starts, not in its first task (~2 s)
        extra += ["--preload", "resqmp.worker_preload"]
    if "--lifetime" not in extra:
        # null means dask-jobqueue's configured default, which the job then gets
        walltime = kw.get("walltime") or dask.config.get(f"jobqueue.{backend}.walltime", None)
        if walltime is not None:
            extra += lifetime_args(backend, walltime)
    kw["worker_extra_args"] = extra

    log_dir = kw.get("log_directory")
    kw["log_directory"] = _expand(str(log_dir)) if log_dir else os.path.join(shared, "logs")

    if backend == "sge":
        # jobqueue writes `#$ -cwd`: the job would start in the launcher's working directory,
        # which need not exist on the execution host (the job then hangs in state Eqw).
        # Start it in the shared directory instead.
        skip = [str(s) for s in _as_list(kw.get("job_directives_skip"), "job_directives_skip")]
        directives = [str(d) for d in _as_list(kw.get("job_extra_directives"), "job_extra_directives")]
        if "-cwd" not in skip and not any(d.split()[:1] in (["-wd"], ["-cwd"]) for d in directives):
            kw["job_directives_skip"] = skip + ["-cwd"]
            kw["job_extra_directives"] = [f"-wd {shared}"] + directives

    sched = dict(kw.get("scheduler_options") or {})
    if "dashboard_address" not in sched:
        # no dashboard: it would be open to every user of the login node
        sched.setdefault("dashboard", False)
        sched["dashboard_address"] = "127.0.0.1:0"
    kw["scheduler_options"] = sched
    return kw


def _dashboard_requested(kw: dict) -> bool:
    return bool(kw["scheduler_options"].get("dashboard", True))


# The one setting that turns the dashboard on (README, "Dashboard"): on the launcher host's
# loopback, reached from elsewhere through ssh (dashboard_access).
DASHBOARD_SETTING = "cluster.scheduler_options.dashboard_address=127.0.0.1:8787"
DASHBOARD_OFF = f"every user of this host could open it; turn it on with --set {DASHBOARD_SETTING}"


def dashboard_access(cluster, link: str) -> str:
    """The ssh tunnel from one's own machine to a dashboard on this host's loopback."""
    from urllib.parse import urlsplit
    parts = urlsplit(link)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not parts.port:
        return ""                       # bound to a reachable address: the link works as it is
    host = socket.getfqdn()
    port = parts.port
    return (f"dashboard from your own machine: ssh -N -L {port}:127.0.0.1:{port} {_whoami()}@{host} "
            f"(add -J LOGIN-NODE when {host} is a compute node), then open http://localhost:{port}{parts.path}")


# --------------------------------------------------------------------------- classes

def _submit_error_text(error: BaseException) -> str:
    """dask-jobqueue's RuntimeError carries the command, exit code, stdout and stderr: keep the exit
    code and the scheduler's own words."""
    text = str(error)
    code = re.search(r"Exit code: (\S+)", text)
    stderr = text.split("stderr:", 1)[1] if "stderr:" in text else text
    words = "; ".join(line.strip() for line in stderr.splitlines() if line.strip())
    return (f"(exit {code.group(1)}) " if code else "") + (words or type(error).__name__)


SUBMIT_RETRY_DELAYS = (2.0, 5.0)      # seconds between submission attempts (busy controllers time out)


def _job_class(base_job: type[Job]) -> type[Job]:
    class ResqmpJob(base_job):
        async def start(self):
            for delay in (*SUBMIT_RETRY_DELAYS, None):
                try:
                    await super().start()
                    return
                except Exception as e:   # noqa: BLE001 - recorded for scheduler_view
                    text = _submit_error_text(e)
                    if delay is not None:
                        log.warning("%s failed, trying again in %.0f s: %s", self.submit_command, delay, text)
                        await asyncio.sleep(delay)
                        continue
                    _SUBMIT_ERRORS.setdefault(str(self.scheduler), []).append(text[:2000])
                    log.error("%s failed: %s", self.submit_command, text)
            # No job: the cluster carries on without this worker (no traceback from the event loop);
            # the launcher's wait for the first worker then reports the error via scheduler_view.
            self.job_id = None
            await ProcessInterface.start(self)

    ResqmpJob.__name__ = ResqmpJob.__qualname__ = base_job.__name__
    return ResqmpJob


def _cluster_class(backend: str) -> type[JobQueueCluster]:
    base = _BASES[backend]

    class ResqmpCluster(base):
        job_cls = _job_class(base.job_cls)
        _resqmp_backend = backend
        _resqmp_tls_dir: str | None = None
        _resqmp_scheduler_options: dict = {}
        _resqmp_log_dir: str | None = None

        def _update_worker_status(self, op, msg):
            # A worker that retired (--lifetime) or whose job ended is dropped from self.workers
            # after distributed.deploy.lost-worker-timeout; if the cluster still plans it (scale(n)
            # or adapt), submit a new job for it. Adaptive alone does not: its plan is unchanged.
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

        @property
        def dashboard_link(self):
            options = self._resqmp_scheduler_options
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
                if self._resqmp_tls_dir:
                    shutil.rmtree(self._resqmp_tls_dir, ignore_errors=True)

    ResqmpCluster.__name__ = ResqmpCluster.__qualname__ = base.__name__
    return ResqmpCluster


# --------------------------------------------------------------------------- TLS files

def _write_tls_files(shared: str) -> str:
    """A fresh folder (mode 700) in the shared directory with the cluster's temporary certificate
    (ca.pem = cert.pem, self-signed) and key (mode 600). Every role uses them; only the owner can
    read them, so only the owner's processes can join the cluster or submit work to it."""
    try:
        tls_dir = tempfile.mkdtemp(prefix=TLS_PREFIX, dir=shared)
    except OSError as e:
        raise ClusterError(f"shared directory {shared}: cannot create the TLS folder ({e.strerror})") from None
    os.chmod(tls_dir, 0o700)
    sec = Security.temporary()
    cert, key = sec.tls_ca_file, sec.tls_worker_key
    for name, text in (("ca.pem", cert), ("cert.pem", cert), ("key.pem", key)):
        fd = os.open(os.path.join(tls_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return tls_dir


# --------------------------------------------------------------------------- contract

def render(profile, worker_env: dict[str, str]) -> str:
    """The job script start() would submit for each worker, with three run-specific values shown
    as placeholders: the scheduler address, the worker name and the TLS folder's random suffix.
    Nothing is started, submitted or written."""
    placeholder_tls = os.path.join(_tls_base(profile), RENDER_TLS_DIR)
    kw = _kwargs(profile, worker_env, placeholder_tls)
    protocol = kw.get("protocol") or ("tls://" if kw.get("security") is not None else "tcp://")
    return _job_script(profile.backend, kw, protocol + RENDER_SCHEDULER, RENDER_WORKER_NAME)


def _job_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """What JobQueueCluster.__init__ hands its Job class (dask_jobqueue.core, 0.9)."""
    job_kw = {k: v for k, v in kw.items() if k not in _CLUSTER_ONLY}
    security = kw.get("security")
    protocol = kw.get("protocol")
    if protocol is None and security is not None:
        protocol = "tls://"
    job_kw["protocol"] = protocol
    job_kw["security"] = security
    job_kw.setdefault("interface", None)
    job_kw["config_name"] = None
    return job_kw


def _job_script(backend: str, kw: dict[str, Any], address: str, name: str) -> str:
    job_kw = _job_kwargs(kw)
    log_dir = job_kw.get("log_directory")
    # the Job class creates log_directory when it does not exist: render must not, so it gets an
    # empty stand-in folder whose (unique) path is then replaced by the real one
    with tempfile.TemporaryDirectory(prefix="resqmp-render-") as stand_in:
        if log_dir and not os.path.isdir(log_dir):
            job_kw["log_directory"] = stand_in
        try:
            script = _BASES[backend].job_cls(address, name=name, **job_kw).job_script()
        except (TypeError, ValueError) as e:
            raise ProfileError(f"cluster: {_BASES[backend].__name__} rejected the options: {e}") from None
        if job_kw.get("log_directory") == stand_in:
            script = script.replace(stand_in, log_dir)
    return script


def start(profile, worker_env: dict[str, str]):
    """A started cluster (scheduler in this process, TLS) with no worker jobs yet."""
    base = _tls_base(profile)
    if not os.path.isdir(base):
        raise ClusterError(f"shared directory {base}: does not exist")
    tls = profile.cluster.get("security", True) is True
    tls_dir = _write_tls_files(base) if tls else None
    try:
        kw = _kwargs(profile, worker_env, tls_dir)
        # the Job class creates it on the client otherwise with the default umask; keep it private
        os.makedirs(kw["log_directory"], mode=0o700, exist_ok=True)
        cls = _cluster_class(profile.backend)
        config = {}
        if not _dashboard_requested(kw):
            # the scheduler's HTTP server still starts: serve only /health, no info/json/proxy pages
            config["distributed.scheduler.http.routes"] = ["distributed.http.health"]
        with dask.config.set(config):
            cluster = cls(**kw)
        cluster._resqmp_tls_dir = tls_dir
        cluster._resqmp_scheduler_options = kw["scheduler_options"]
        cluster._resqmp_log_dir = kw["log_directory"]
        cluster._resqmp_started = time.time()
    except BaseException:
        if tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)
        raise
    return cluster


def _job_ids(cluster) -> list[str]:
    ids = []
    for job in list(getattr(cluster, "workers", {}).values()):
        job_id = getattr(job, "job_id", None)
        if job_id:
            ids.append(str(job_id))
    return ids


def _run(cmd: list[str], timeout: float = 15) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return f"({cmd[0]} not found)"
    except subprocess.TimeoutExpired:
        return f"({shlex.join(cmd)} timed out after {timeout:.0f} s)"
    out = (proc.stdout + proc.stderr).rstrip()
    return out or "(no output)"


def _view_commands(backend: str, ids: list[str]) -> list[list[str]]:
    if backend == "slurm":
        return [["squeue", "-j", ",".join(ids), "-o", "%.12i %.10P %.20j %.9T %.10M %.20R"]]
    if backend == "sge":
        # qstat -j also explains why a pending job cannot be scheduled, when the site enables it
        return [["qstat", "-u", os.environ.get("USER") or _whoami()]] + \
               [["qstat", "-j", i] for i in ids[:3]]
    if backend == "pbs":
        return [["qstat", "-x", *ids], ["qstat", "-f", ids[0]]]
    if backend == "lsf":
        return [["bjobs", "-w", *ids], ["bjobs", "-p", *ids]]
    return []


def _whoami() -> str:
    import getpass
    return getpass.getuser()


def _filter_sge(text: str, ids: list[str]) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= {"-"}]
    keep = lines[:1] + [ln for ln in lines[1:] if ln.split()[0] in ids]
    return "\n".join(keep) if len(keep) > 1 else text


def submission_errors(cluster) -> list[str]:
    """Failed submissions (after retries) of this cluster's worker jobs, one line each: lets a
    caller stop waiting for workers at once instead of at scaling.worker_timeout."""
    address = getattr(getattr(cluster, "scheduler", None), "address", None) or ""
    return list(_SUBMIT_ERRORS.get(str(address), []))


def scheduler_view(cluster) -> str:
    """The scheduler's view of this cluster's worker jobs (state, reason), plus any submission
    errors: what the user needs when no worker arrived."""
    backend = getattr(cluster, "_resqmp_backend", None)
    if backend is None:
        return ""
    parts = []
    errors = submission_errors(cluster)
    if errors:
        parts.append(f"{_SUBMIT[backend]} failed: {errors[-1]}")
    ids = _job_ids(cluster)
    if not ids:
        if not errors:
            parts.append("no job was submitted")
        return "\n".join(parts)
    parts.append(f"jobs {', '.join(ids)}:")
    for cmd in _view_commands(backend, ids):
        out = _run(cmd)
        if (backend == "slurm" and len(out.splitlines()) == 1) or out == "(no output)":
            out += "\n(none listed: the jobs ended; their output follows if it is in the log directory)"
        if backend == "sge" and cmd[1] == "-u":
            out = _filter_sge(out, ids)
        if backend == "sge" and cmd[1] == "-j":
            wanted = ("job_number", "job_state", "error reason", "scheduling info", "hard_queue_list",
                      "hard resource_list", "cannot run")
            out = "\n".join(ln for ln in out.splitlines()
                            if any(ln.strip().startswith(w) or w in ln for w in wanted)) or out
        parts.append(f"$ {shlex.join(cmd)}\n{out}")
    parts.extend(_log_tails(cluster, ids))
    return "\n".join(parts)


def _log_tails(cluster, ids: list[str], jobs: int = 2, lines: int = 6) -> list[str]:
    """The last lines of the first jobs' output files: a worker job that started and died (python
    not found, a module missing, a bad --set) says why there."""
    log_dir = getattr(cluster, "_resqmp_log_dir", None)
    backend = getattr(cluster, "_resqmp_backend", None)
    if not log_dir or not os.path.isdir(log_dir):
        return []
    try:
        job_name = cluster._dummy_job.job_name or "worker"
        names = os.listdir(log_dir)
    except Exception:   # noqa: BLE001 - best effort, for an error message
        return []
    started = getattr(cluster, "_resqmp_started", 0.0)
    out = []
    for job_id in ids[:jobs]:
        if backend == "slurm":
            wanted = {f"{job_name}-{job_id}.err", f"{job_name}-{job_id}.out"}
        elif backend in ("sge", "pbs"):
            wanted = {f"{job_name}.o{job_id}", f"{job_name}.e{job_id}"}
        else:                                   # lsf names the files after the worker
            wanted = {n for n in names if n.endswith((f"-{job_id}.err", f"-{job_id}.out"))}
        for name in sorted(wanted & set(names)):
            path = os.path.join(log_dir, name)
            try:
                if os.path.getmtime(path) < started - 1:      # an older run's job with the same id
                    continue
                with open(path, errors="replace") as f:
                    tail = [ln.rstrip() for ln in f.readlines()[-200:] if ln.strip()][-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"$ tail {path}\n" + "\n".join(tail))
    return out
