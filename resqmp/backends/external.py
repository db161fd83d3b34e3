"""External backend: connect to a Dask scheduler that something else started.

Used by the Helm chart's standalone mode (its scheduler Deployment + Service and worker
Deployment; the Job's launcher connects to tcp://<release>-scheduler:8786), and for any
long-running Dask cluster. resqmp does not start, scale or stop the workers here, so it cannot set
their environment either: whoever starts them must give them the worker environment
(`resqmp profiles show external` lists it; the chart renders it into the worker pods' env).

`start()` returns the scheduler address string; the runner connects a Client to it and skips
scale / adapt / close.
"""
from __future__ import annotations

import os
import re

import yaml

from resqmp.worker_env import shell_exports

_OPTIONS = {
    "address",         # tcp://host:8786 (tls:// with `security`); $VARS are expanded
    "security",        # {tls_ca_file, tls_client_cert, tls_client_key, require_encryption}
}
_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://[^\s/]+(:\d+)?/?$")


def cluster_options() -> set[str]:
    return set(_OPTIONS)


def address(profile) -> str:
    raw = profile.cluster.get("address") or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not raw:
        raise ValueError("cluster.address is not set (e.g. --set cluster.address=tcp://scheduler:8786)")
    value = os.path.expandvars(str(raw)).strip()
    if "://" not in value:
        value = "tcp://" + value
    if not _ADDRESS.match(value):
        raise ValueError(f"cluster.address {raw!r}: expected PROTOCOL://HOST:PORT, e.g. tcp://scheduler:8786")
    return value


def _tls_config(profile) -> dict:
    """`security:` as dask config: the runner's Client(address) builds its Security from it."""
    cfg = profile.cluster.get("security") or {}
    keys = {"tls_ca_file": "distributed.comm.tls.ca-file",
            "tls_client_cert": "distributed.comm.tls.client.cert",
            "tls_client_key": "distributed.comm.tls.client.key"}
    unknown = set(cfg) - set(keys) - {"require_encryption"}
    if unknown:
        raise ValueError(f"cluster.security: unknown key {sorted(unknown)[0]} (expected {', '.join(sorted(keys))}, require_encryption)")
    out = {keys[k]: os.path.expanduser(os.path.expandvars(str(v))) for k, v in cfg.items() if k in keys}
    if cfg:
        out["distributed.comm.require-encryption"] = bool(cfg.get("require_encryption", True))
    return out


def render(profile, worker_env: dict[str, str]) -> str:
    try:
        addr = address(profile)
    except ValueError as e:
        addr = f"(not set: {e})"
    doc = {
        "scheduler address": addr,
        "security": profile.cluster.get("security") or None,
        "worker environment (must be set where the workers are started; resqmp does not start them)": worker_env,
        # the same, ready for the shell that starts them: $NAME / ${NAME} expand, nothing else
        "as sh exports": shell_exports(worker_env),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def start(profile, worker_env: dict[str, str]):
    addr = address(profile)
    tls = _tls_config(profile)
    if tls:
        import dask
        dask.config.set(tls)
    return addr


def scheduler_view(cluster) -> str:
    return ""
