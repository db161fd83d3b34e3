"""Backends turn a profile into a running Dask cluster.

Every backend module offers the same four functions:
    cluster_options() -> set[str] | None   keys allowed under `cluster:` (None: not checked)
    render(profile, worker_env) -> str      what would be started (kwargs, job script, manifest)
    start(profile, worker_env) -> cluster   a distributed cluster object (close/scale/adapt)
    scheduler_view(cluster) -> str          the resource manager's view of pending workers ("" if none)
and may set TEARDOWN, what closing the cluster does to what it provisioned (for error messages),
and DASHBOARD_OFF / dashboard_access(cluster, link) (see resqmp/dashboard.py).
"""
from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {
    "local": "resqmp.backends.local",
    "slurm": "resqmp.backends.jobqueue",
    "sge": "resqmp.backends.jobqueue",
    "pbs": "resqmp.backends.jobqueue",
    "lsf": "resqmp.backends.jobqueue",
    "kubernetes": "resqmp.backends.kubernetes",
    "external": "resqmp.backends.external",
}

BACKENDS = tuple(_MODULES)


def backend_for(name: str) -> ModuleType:
    return importlib.import_module(_MODULES[name])
