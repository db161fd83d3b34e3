"""External backend: connect to a Dask scheduler that something else started.

Used by the Helm chart's standalone mode (its scheduler Deployment + Service and worker
Deployment; the Job's launcher connects to tcp://<release>-scheduler:8786), and for any
long-running Dask cluster. resqmp does not start, scale or stop the workers here, so it cannot set
their environment either: whoever starts them must give them the worker environment
(`resqmp profiles show external` lists it; the chart renders it into the worker pods' env). Nor
can it set the scheduler's allowed-failures (tasks.retries): it says so when they differ. The
scheduler must have resqmp, the launcher's version (it unpickles resqmp's tasks): connect() checks
that first (resqmp.scheduler_check).

start() returns an ExternalCluster: the address, with scale, adapt and close that do nothing.
"""
from __future__ import annotations

import os
import re

import yaml
from distributed import Client
from distributed.security import Security

from resqmp import scheduler_check
from resqmp.backends import tls
from resqmp.errors import ProfileError

from resqmp.worker_env import shell_exports

_OPTIONS = {
    "address",         # tcp://host:8786 (tls:// with `security`); $VARS are expanded
    "security",        # {tls_ca_file, tls_client_cert, tls_client_key, require_encryption}
}
_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://[^\s/]+(:\d+)?/?$")


def cluster_options(backend: str = "external") -> set[str]:
    return set(_OPTIONS)


def floor(backend: str = "external"):
    """dask's own `scheduler-address` (DASK_SCHEDULER_ADDRESS) is the site's; else this machine."""
    from resqmp.backends import Floor
    return Floor({"address": ("scheduler-address",)}, lambda above, profile: {"address": "tcp://127.0.0.1:8786"})


def address(profile) -> str:
    raw = profile.cluster.get("address")
    if not raw:
        raise ProfileError(f"profile {profile.source}: cluster.address is not set "
                           f"(e.g. --set cluster.address=tcp://scheduler:8786)")
    value = os.path.expandvars(str(raw)).strip()
    if "://" not in value:
        value = "tcp://" + value
    if not _ADDRESS.match(value):
        raise ProfileError(f"{profile.origin(('cluster', 'address'))}: cluster.address {raw!r}: "
                           f"expected PROTOCOL://HOST:PORT, e.g. tcp://scheduler:8786")
    return value


class ExternalCluster:
    """A scheduler someone else runs: connect to it; scaling and closing are theirs."""

    teardown = ""
    manages_workers = False
    plan: frozenset = frozenset()       # the workers are someone else's: none planned here

    def __init__(self, address: str, security: Security | None, retries: int):
        self.scheduler_address = address
        self.security = security
        self.retries = retries
        self.warnings: list[str] = []

    def connect(self) -> Client:
        client = Client(self.scheduler_address, security=self.security)
        try:
            # before anything is sent: the scheduler unpickles resqmp's tasks, so it needs resqmp
            warning = scheduler_check.check(client, self.scheduler_address)
        except BaseException:
            client.close()
            raise
        if warning:
            self.warnings.append(warning)
        self._check_retries(client)
        return client

    def _check_retries(self, client: Client) -> None:
        """tasks.retries is decided by the scheduler's allowed-failures, which only whoever
        started it can set."""
        try:
            theirs = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
        except Exception:   # noqa: BLE001 - a scheduler that runs no functions from clients
            theirs = None
        if theirs != self.retries:
            said = f"re-runs a task whose worker died {theirs} times" if theirs is not None else \
                "did not say how often it re-runs a task whose worker died"
            self.warnings.append(
                f"tasks.retries is {self.retries}, but the external scheduler {said}; resqmp cannot change "
                f"that: start it with DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES={self.retries}")

    def scale(self, n: int) -> None:
        pass

    def adapt(self, minimum: int = 0, maximum: int = 0) -> None:
        pass

    def close(self) -> None:
        pass

    def startup_failure(self) -> str | None:
        return None

    def scheduler_view(self) -> str:
        return ""

    dashboard_off = ""

    def dashboard_access(self, link: str) -> str:
        return ""                       # the scheduler's owner knows how its dashboard is reached


class ExternalBackend:
    """A profile for an existing scheduler; building it checks the address and TLS keys."""

    def __init__(self, profile, worker_env: dict[str, str]):
        self.profile = profile
        self.worker_env = worker_env
        self.address = address(profile)
        self.security = tls.client_security(profile.cluster.get("security"))

    def render(self) -> str:
        doc = {
            "scheduler address": self.address,
            "security": self.profile.cluster.get("security") or None,
            "worker environment (must be set where the workers are started; resqmp does not start them)":
                self.worker_env,
            # the same, ready for the shell that starts them: $NAME / ${NAME} expand, nothing else
            "as sh exports": shell_exports(self.worker_env),
        }
        return yaml.safe_dump(doc, sort_keys=False)

    def start(self) -> ExternalCluster:
        return ExternalCluster(self.address, self.security, int(self.profile.tasks.get("retries", 2)))
