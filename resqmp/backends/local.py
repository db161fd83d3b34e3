"""Local backend: distributed.LocalCluster on this machine."""
from __future__ import annotations

import inspect
import logging
import os

import dask
import yaml
from distributed import Client, LocalCluster, Nanny, Worker

from resqmp.backends.checks import Checker
from resqmp.worker_env import expanded_here

log = logging.getLogger(__name__)

# Options handled by resqmp itself (scaling:) rather than passed through.
_MANAGED = {"n_workers"}
WORKER_PRELOAD = "resqmp.worker_preload"


def cluster_options(backend: str = "local") -> set[str]:
    names = set()
    for cls in (LocalCluster, Worker, Nanny):   # LocalCluster passes unknown kwargs to its workers
        names |= set(inspect.signature(cls.__init__).parameters)
    return names - {"self", "kwargs", "worker_kwargs", "loop", "asynchronous", "start"} - _MANAGED


def floor(backend: str = "local"):
    """LocalCluster reads distributed's config itself; resqmp adds nothing under the profile."""
    from resqmp.backends import Floor
    return Floor({}, lambda above, profile: {})


def worker_error(error: BaseException) -> str:
    """The worker's own error under distributed's "Nanny failed to start." wrappers."""
    while isinstance(error, RuntimeError) and "failed to start" in str(error) and \
            (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


class LocalWorkers(LocalCluster):
    """distributed's LocalCluster, as run.py uses a cluster (backends.Cluster), keeping why its
    workers did not start instead of leaving it to a traceback while the launcher waits."""

    teardown = ""
    manages_workers = True

    def __init__(self, **kwargs):
        self.start_errors: list[str] = []
        self.warnings: list[str] = []
        super().__init__(**kwargs)

    async def _correct_state_internal(self) -> None:
        # where SpecCluster creates and starts workers (scale, adapt): a worker that raises in its
        # constructor (a bad option) or at start-up (its process died) ends up here
        try:
            await super()._correct_state_internal()
        except Exception as e:   # noqa: BLE001 - reported by startup_failure()
            self.start_errors.append(worker_error(e))
            log.debug("a local worker did not start", exc_info=True)

    def connect(self) -> Client:
        return Client(self)

    def startup_failure(self) -> str | None:
        if self.start_errors and not self.scheduler_info.get("workers"):
            return f"a local worker did not start: {self.start_errors[-1]}"
        return None

    def scheduler_view(self) -> str:
        return ""

    dashboard_off = ""

    def dashboard_access(self, link: str) -> str:
        return ""                       # on this machine: the link works as it is


class LocalBackend:
    """A profile for LocalCluster; building it checks the option values (ProfileError)."""

    def __init__(self, profile, worker_env: dict[str, str]):
        self.profile = profile
        self.worker_env = worker_env
        check = Checker(profile.cluster, profile.origin)
        check.memory_limit("memory_limit")
        check.count("threads_per_worker")
        check.boolean("processes")
        check.port("scheduler_port")
        check.port("worker_port")
        check.port("nanny_port")
        check.address("dashboard_address")
        check.address("worker_dashboard_address")
        check.seconds("death_timeout")
        check.interface_here("interface")         # scheduler and workers bind to it, on this host

    def cluster_kwargs(self) -> dict:
        kwargs = {k: v for k, v in self.profile.cluster.items() if k not in _MANAGED}
        kwargs["n_workers"] = 0            # resqmp scales after the client has registered its plugins
        # A worker given `preload` ignores distributed.worker.preload, so resqmp's preload (SIGINT
        # ignored, resqpy imported at start) joins the profile's own list instead of the config.
        preload = kwargs.get("preload") or dask.config.get("distributed.worker.preload", []) or []
        preload = [preload] if isinstance(preload, str) else list(preload)
        kwargs["preload"] = preload + ([WORKER_PRELOAD] if WORKER_PRELOAD not in preload else [])
        return kwargs

    def render(self) -> str:
        doc = {
            "distributed.LocalCluster": self.cluster_kwargs(),
            "distributed.nanny.pre-spawn-environ (set before each worker interpreter starts)":
                expanded_here(self.worker_env),
            "scaling": self.profile.scaling,
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def start(self) -> LocalWorkers:
        # local workers log as the launcher does (dask's way of passing config to its subprocesses):
        # a worker that cannot start is resqmp's one error line, not a traceback from each nanny
        logging_config = dask.config.serialize({"logging": dask.config.get("logging", {})})
        # no shell between this process and its workers: the environment is expanded here
        use_worker_environment({**expanded_here(self.worker_env), "DASK_INTERNAL_INHERIT_CONFIG": logging_config})
        # A local worker that leaves the scheduler is one its nanny restarts (after a task's timeout,
        # a crash); LocalCluster closes it for good if it is not back within lost-worker-timeout
        # (15 s), which a loaded machine exceeds. It gets as long as a first worker has to arrive.
        dask.config.set({"distributed.deploy.lost-worker-timeout":
                         f"{float(self.profile.scaling.get('worker_timeout', 120))}s"})
        kwargs = self.cluster_kwargs()
        # LocalCluster's default (WARN) would set each nanny's logger to it, over the config above
        kwargs.setdefault("silence_logs", False)
        # tasks.retries: how often the scheduler re-runs a task whose worker died
        kwargs["scheduler_kwargs"] = {**(kwargs.get("scheduler_kwargs") or {}),
                                      "allowed_failures": int(self.profile.tasks.get("retries", 2))}
        return LocalWorkers(**kwargs)


def use_worker_environment(worker_env: dict[str, str]) -> None:
    """Every local worker started from now on, by this process, gets worker_env before its
    interpreter starts. Nannies read pre-spawn-environ when created, including those adaptive
    scaling adds later, so this stays in force until the launch ends (run.py then restores the
    process's environment and dask config)."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    environ.update(worker_env)
    dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
    # The Nanny lets the launcher's own environment override pre-spawn-environ (a login shell's
    # NUMBA_NUM_THREADS=8 would win); the profile must win, so the launcher carries the values too.
    os.environ.update(worker_env)
