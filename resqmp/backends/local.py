"""Local backend: distributed.LocalCluster on this machine."""
from __future__ import annotations

import inspect
import os

import dask
import yaml
from distributed import LocalCluster, Nanny, Worker

from resqmp.worker_env import expanded_here

# Options handled by resqmp itself (scaling:) rather than passed through.
_MANAGED = {"n_workers"}


def cluster_options() -> set[str]:
    names = set()
    for cls in (LocalCluster, Worker, Nanny):   # LocalCluster passes unknown kwargs to its workers
        names |= set(inspect.signature(cls.__init__).parameters)
    return names - {"self", "kwargs", "worker_kwargs", "loop", "asynchronous", "start"} - _MANAGED


WORKER_PRELOAD = "resqmp.worker_preload"


def _cluster_kwargs(profile) -> dict:
    kwargs = {k: v for k, v in profile.cluster.items() if k not in _MANAGED}
    kwargs["n_workers"] = 0            # resqmp scales after the client has registered its plugins
    # A worker given `preload` ignores distributed.worker.preload, so resqmp's preload (SIGINT
    # ignored, resqpy imported at start) joins the profile's own list instead of the config.
    preload = kwargs.get("preload") or dask.config.get("distributed.worker.preload", []) or []
    preload = [preload] if isinstance(preload, str) else list(preload)
    kwargs["preload"] = preload + ([WORKER_PRELOAD] if WORKER_PRELOAD not in preload else [])
    return kwargs


def render(profile, worker_env: dict[str, str]) -> str:
    worker_env = expanded_here(worker_env)
    doc = {
        "distributed.LocalCluster": _cluster_kwargs(profile),
        "distributed.nanny.pre-spawn-environ (set before each worker interpreter starts)": worker_env,
        "scaling": profile.scaling,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def start(profile, worker_env: dict[str, str]):
    use_worker_environment(expanded_here(worker_env))   # no shell between this process and its workers
    # A local worker that leaves the scheduler is one its nanny restarts (after a task's timeout,
    # a crash); LocalCluster closes it for good if it is not back within lost-worker-timeout
    # (15 s), which a loaded machine exceeds. It gets as long as a first worker has to arrive.
    dask.config.set({"distributed.deploy.lost-worker-timeout": f"{float(profile.scaling.get('worker_timeout', 120))}s"})
    return LocalCluster(**_cluster_kwargs(profile))


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


def scheduler_view(cluster) -> str:
    return ""
