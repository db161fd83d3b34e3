"""Backends turn a profile into a running Dask cluster.

`for_profile(profile, worker_env)` builds the profile's Backend. Building it checks every option
value that can be checked on this side (a bad one is a ProfileError, exit 4, before anything is
provisioned), so `resqmp profiles validate` and `resqmp launch` refuse the same profiles.
`floor(backend)` says what lies under a profile's `cluster:` (the site's dask config, resqmp's
defaults). `start()` gives a Cluster: what run.py connects to, scales, asks about and closes, the same way
for every backend.

    backend        module               Backend             Cluster
    local          local.py             LocalBackend        LocalWorkers (LocalCluster)
    slurm/sge/     jobqueue.py          JobqueueBackend     WorkerCluster (dask-jobqueue; one
      pbs/lsf                                               description per scheduler: schedulers.py)
    kubernetes     kubernetes.py        KubernetesBackend   ResqmpKubeCluster (kubecluster.py)
    external       external.py          ExternalBackend     ExternalCluster (an address; scale and
                                                            close do nothing)
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Collection, Protocol

if TYPE_CHECKING:
    from distributed import Client

_MODULES = {
    "local": ("resqmp.backends.local", "LocalBackend"),
    "slurm": ("resqmp.backends.jobqueue", "JobqueueBackend"),
    "sge": ("resqmp.backends.jobqueue", "JobqueueBackend"),
    "pbs": ("resqmp.backends.jobqueue", "JobqueueBackend"),
    "lsf": ("resqmp.backends.jobqueue", "JobqueueBackend"),
    "kubernetes": ("resqmp.backends.kubernetes", "KubernetesBackend"),
    "external": ("resqmp.backends.external", "ExternalBackend"),
}

BACKENDS = tuple(_MODULES)


class Cluster(Protocol):
    """A started cluster, as run.py uses it."""

    teardown: str            # what close() does to what the cluster provisioned ("jobs cancelled")
    manages_workers: bool    # False: someone else starts the workers (scale and adapt do nothing)
    warnings: list[str]      # lines for the user about what the cluster cannot do as the profile
                             # asks, filled by connect()

    plan: Collection         # the workers the cluster means to have (scale/adapt), none for external

    def connect(self) -> Client:
        """A client of the cluster's scheduler."""

    def scale(self, n: int) -> Any: ...

    def adapt(self, minimum: int, maximum: int) -> Any: ...

    def startup_failure(self) -> str | None:
        """Why no worker will arrive (submissions refused, workers that died at start-up), or
        None while one may still come."""

    def scheduler_view(self) -> str:
        """The resource manager's view of the workers it was asked for ("" if it has none)."""

    dashboard_off: str       # why the dashboard is off by default and how to turn it on ("": say nothing)

    def dashboard_access(self, link: str) -> str:
        """How to open a dashboard link that only the launcher's host (or the cluster's network)
        reaches, e.g. an ssh tunnel ("" when the link works as it is); see resqmp/dashboard.py."""

    def close(self) -> Any: ...


class Backend(Protocol):
    """One profile's way to a cluster; built by for_profile() (options checked there)."""

    def render(self) -> str:
        """What start() would start (cluster keyword arguments, a job script, a manifest); nothing
        is started or written."""

    def start(self) -> Cluster:
        """Start the cluster, with no workers yet (run.py scales it once its client is ready)."""


@dataclass(frozen=True)
class Floor:
    """What lies under a profile's `cluster:` for one backend (profiles.py merges it in): the
    site's dask config, then resqmp's own defaults."""

    dask_keys: dict[str, tuple[str, ...]]       # option -> the dask config keys that set it, first wins
    defaults: Callable[[dict, dict], dict]      # (options set above, the whole profile) -> defaults


def _module(backend: str):
    return importlib.import_module(_MODULES[backend][0])


def cluster_options(backend: str) -> set[str] | None:
    """Keys allowed under `cluster:` for the backend (None: not checked)."""
    return _module(backend).cluster_options(backend)


def floor(backend: str) -> Floor:
    return _module(backend).floor(backend)


def for_profile(profile, worker_env: dict[str, str]) -> Backend:
    module, name = _MODULES[profile.backend]
    return getattr(importlib.import_module(module), name)(profile, worker_env)
