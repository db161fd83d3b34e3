"""The operator's KubeCluster with what resqmp asks of a started cluster (backends.Cluster).

A module of its own so that dask_kubernetes (and its Kubernetes clients) is imported only by a
launch that starts a Kubernetes cluster, not by every command that reads a profile."""
from __future__ import annotations

from dask_kubernetes.operator import KubeCluster
from distributed import Client

from resqmp.backends.kubernetes import dashboard_access, worker_pods_view


class ResqmpKubeCluster(KubeCluster):
    teardown = "cluster deleted"
    manages_workers = True

    def __init__(self, **kwargs):
        self.warnings: list[str] = []
        super().__init__(**kwargs)

    def connect(self) -> Client:
        return Client(self)

    def startup_failure(self) -> str | None:
        return None             # pods that cannot start stay Pending: scheduler_view says why

    def scheduler_view(self) -> str:
        return worker_pods_view(self.namespace, self.name)

    dashboard_off = ""

    def dashboard_access(self, link: str) -> str:
        return dashboard_access(self, link)
