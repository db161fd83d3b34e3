"""Kubernetes backend: a DaskCluster run by the dask-kubernetes operator (operator KubeCluster).

The cluster spec starts from dask_kubernetes' `make_cluster_spec` and is then adapted for resqpy
work: the worker environment as pod env (set before the worker interpreter starts, so numba
sees NUMBA_NUM_THREADS; `client.run` afterwards has no effect; values with $NAME references
through a shell prefix, see container_environment), the shared volume (PVC) mounted on
scheduler and workers, an emptyDir at /tmp (the root filesystem is read-only), a restricted
security context, and `dask scheduler` / `dask worker` commands (distributed no longer ships
the `dask-scheduler` / `dask-worker` scripts that make_cluster_spec names).

The image is the resqmp image (containers/Dockerfile): resqpy and resqmp are installed in it, so
nothing is uploaded to workers; its entrypoint copies the pre-compiled numba cache to a writable
folder, which is why the manifests set `args:` and never `command:`.
"""
from __future__ import annotations

import copy
import getpass
import re
import uuid as _uuid
from typing import Any

import yaml

from resqmp.errors import ProfileError
from resqmp.worker_env import check_values, references, shell_exports

# Options of dask_kubernetes.operator.KubeCluster / make_cluster_spec that resqmp passes on.
KUBECLUSTER_OPTIONS = {
    "name", "namespace", "image", "resources", "env", "worker_command", "idle_timeout",
    "resource_timeout", "scheduler_service_type", "shutdown_on_close", "port_forward_cluster_ip",
    "scheduler_forward_port",
}
# resqmp's own keys (documented in resqmp/profiles/kubernetes.yaml).
RESQMP_OPTIONS = {
    "shared_volume",          # {claim_name, mount_path, sub_path, read_only}: PVC on scheduler + workers
    "scheduler_resources",    # resources of the scheduler pod (default: `resources`)
    "image_pull_policy",
    "image_pull_secrets",     # list of secret names
    "worker_extra_args",      # appended to the worker command
    "worker_preload",         # modules each worker imports before it takes tasks (--preload)
    "service_account_name",   # of scheduler and worker pods (default: none, token not mounted)
    "node_selector",
    "tolerations",
    "labels",                 # added to scheduler and worker pods
    "annotations",
    "security_context",       # pod securityContext (replaces resqmp's default)
    "tmp_size_limit",         # sizeLimit of the /tmp emptyDir
}

DEFAULT_NAME = "resqmp-{user}-{uuid}"
DEFAULT_IMAGE = "localhost/resqmp:latest"

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def cluster_options(backend: str = "kubernetes") -> set[str]:
    return KUBECLUSTER_OPTIONS | RESQMP_OPTIONS


# resqmp's defaults: used where neither the profile nor the site's dask config (kubernetes.*) sets a value
DEFAULTS = {
    "name": DEFAULT_NAME,
    "image": DEFAULT_IMAGE,
    "image_pull_policy": "IfNotPresent",
    "worker_command": "dask worker --nthreads 1",     # resqpy tasks: one thread per worker
    "worker_preload": ["resqpy.multi_processing"],    # resqpy's ~2 s import before the first task
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "4Gi"}},
    "scheduler_resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    "idle_timeout": 600,
    "resource_timeout": 300,
    "scheduler_service_type": "ClusterIP",
    "shutdown_on_close": True,
    "shared_volume": {"claim_name": "resqmp-shared", "mount_path": "/shared"},
    "tmp_size_limit": "2Gi",
}


def floor(backend: str = "kubernetes"):
    """The operator's own options come from the site's `kubernetes.*` dask config (as KubeCluster
    reads them), then resqmp's defaults."""
    from resqmp.backends import Floor
    keys = {option: (f"kubernetes.{option.replace('_', '-')}",) for option in KUBECLUSTER_OPTIONS}
    return Floor(keys, lambda above, profile: copy.deepcopy(DEFAULTS))


def _dns_label(text: str) -> str:
    text = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return text or "user"


def cluster_name(template: str | None, uid: str | None = None) -> str:
    """Format a name template the way KubeCluster does ({user}, {uuid}), DNS-1123 safe.

    KubeCluster formats its `name` argument, but not the name inside a custom cluster spec, so
    resqmp formats it before building the spec."""
    try:
        user = getpass.getuser()
    except Exception:          # no passwd entry for the uid (arbitrary-UID platforms)
        user = "user"
    from dask_kubernetes.operator.validation import validate_cluster_name

    name = (template or DEFAULT_NAME).format(user=_dns_label(user), uuid=uid or _uuid.uuid4().hex[:10])
    validate_cluster_name(name)     # raises with the operator's rule (RFC 1123, length limit)
    return name


def pod_environment(profile, worker_env: dict[str, str]) -> dict[str, str]:
    """Worker environment + `cluster.env`: what the pods' processes must see, unexpanded (the
    rule of worker_env: only $NAME / ${NAME} expand, in the container)."""
    env = dict(worker_env)
    extra = profile.cluster.get("env") or {}
    if isinstance(extra, list):
        extra = {item["name"]: item.get("value", "") for item in extra}
    env.update({k: str(v) for k, v in extra.items()})
    check_values(env, f"profile {profile.source}")
    return env


def container_environment(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(pod env, args prefix) that give a container `env` under worker_env's rule.

    Kubernetes has its own syntax in env values: `$(VAR)` expands to a variable defined earlier
    in the pod spec (others stay as written) and `$$` is a `$`. So every value without a
    reference goes into the pod env with each `$` doubled: Kubernetes interprets nothing in it.
    The values with references are exported by a `sh -c` prefix of the container's args (after the
    image entrypoint, before the Dask process), where they expand as in a job script: to the
    container's own variables (HOME, the image's), the empty string when unset."""
    literal = {k: v.replace("$", "$$") for k, v in env.items() if not references(v)}
    referring = {k: v for k, v in env.items() if references(v)}
    if not referring:
        return literal, []
    try:
        exports = shell_exports(referring)
    except ValueError as e:
        raise ProfileError(f"cluster.env: {e}") from None
    return literal, ["sh", "-c", "; ".join(exports) + '; exec "$@"', "resqmp-env"]


def _volumes(cfg: dict) -> tuple[list[dict], list[dict]]:
    tmp = {"name": "tmp", "emptyDir": {}}
    if cfg.get("tmp_size_limit"):
        tmp["emptyDir"]["sizeLimit"] = str(cfg["tmp_size_limit"])
    volumes = [tmp]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    shared = cfg.get("shared_volume")
    if shared:
        if not shared.get("claim_name"):
            raise ValueError("cluster.shared_volume needs claim_name (the PersistentVolumeClaim to mount)")
        volumes.append({"name": "shared", "persistentVolumeClaim": {
            "claimName": shared["claim_name"], "readOnly": bool(shared.get("read_only", False))}})
        mount = {"name": "shared", "mountPath": shared.get("mount_path", "/shared")}
        if shared.get("sub_path"):
            mount["subPath"] = shared["sub_path"]
        if shared.get("read_only"):
            mount["readOnly"] = True
        mounts.append(mount)
    return volumes, mounts


def _adapt_pod(pod_spec: dict, cfg: dict, volumes: list, mounts: list, resources: dict | None) -> None:
    pod_spec["securityContext"] = copy.deepcopy(cfg.get("security_context") or POD_SECURITY_CONTEXT)
    pod_spec["volumes"] = copy.deepcopy(volumes)
    if cfg.get("service_account_name"):
        pod_spec["serviceAccountName"] = cfg["service_account_name"]
    else:
        pod_spec["automountServiceAccountToken"] = False     # workers never talk to the API server
    if cfg.get("image_pull_secrets"):
        pod_spec["imagePullSecrets"] = [{"name": s} for s in cfg["image_pull_secrets"]]
    if cfg.get("node_selector"):
        pod_spec["nodeSelector"] = dict(cfg["node_selector"])
    if cfg.get("tolerations"):
        pod_spec["tolerations"] = copy.deepcopy(cfg["tolerations"])
    for container in pod_spec["containers"]:
        container["securityContext"] = copy.deepcopy(CONTAINER_SECURITY_CONTEXT)
        container["volumeMounts"] = copy.deepcopy(mounts)
        if cfg.get("image_pull_policy"):
            container["imagePullPolicy"] = cfg["image_pull_policy"]
        if resources:
            container["resources"] = _quantities(resources)
        else:
            container.pop("resources", None)
        if not container.get("env"):
            container.pop("env", None)


def _quantities(resources: dict) -> dict:
    """Quantities as strings: the DaskCluster CRD types them as strings (a YAML `cpu: 2` would be
    rejected by the API server)."""
    return {section: {name: str(value) for name, value in (values or {}).items()}
            for section, values in resources.items()}


def _metadata(cfg: dict, component: str) -> dict:
    labels = {"app.kubernetes.io/name": "resqmp", "app.kubernetes.io/component": component,
              "app.kubernetes.io/managed-by": "resqmp"}
    labels.update({k: str(v) for k, v in (cfg.get("labels") or {}).items()})
    meta: dict[str, Any] = {"labels": labels}
    if cfg.get("annotations"):
        meta["annotations"] = {k: str(v) for k, v in cfg["annotations"].items()}
    return meta


def cluster_spec(profile, worker_env: dict[str, str], name: str | None = None) -> dict:
    """The DaskCluster resource for this profile (replicas 0: resqmp scales once its client is ready)."""
    from dask_kubernetes.operator import make_cluster_spec

    cfg = profile.cluster
    name = name or cluster_name(cfg.get("name"))
    image = cfg.get("image") or DEFAULT_IMAGE
    env, args_prefix = container_environment(pod_environment(profile, worker_env))
    worker_command = cfg.get("worker_command") or "dask worker --nthreads 1"
    if isinstance(worker_command, str):
        worker_command = worker_command.split()
    spec = make_cluster_spec(
        name=name,
        image=image,
        n_workers=0,
        resources=None,
        env=env,
        worker_command=list(worker_command),
        scheduler_service_type=cfg.get("scheduler_service_type", "ClusterIP"),
        idle_timeout=int(cfg.get("idle_timeout") or 0),
    )
    spec["metadata"]["labels"] = {"app.kubernetes.io/name": "resqmp", "app.kubernetes.io/managed-by": "resqmp"}
    if cfg.get("namespace"):
        spec["metadata"]["namespace"] = cfg["namespace"]
    volumes, mounts = _volumes(cfg)

    scheduler = spec["spec"]["scheduler"]
    scheduler["metadata"] = _metadata(cfg, "scheduler")
    (container,) = scheduler["spec"]["containers"]
    # distributed >= 2024 has `dask scheduler`; the dask-scheduler script no longer exists
    container["args"] = ["dask", "scheduler", "--host", "0.0.0.0"] + \
        [a for a in container["args"][3:] if a != "--jupyter"]
    _adapt_pod(scheduler["spec"], cfg, volumes, mounts, cfg.get("scheduler_resources") or cfg.get("resources"))
    # tasks.retries: the scheduler (in its pod, not in the launcher) decides how often a task whose
    # worker died (an evicted pod) is run again
    container.setdefault("env", []).append({"name": "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES",
                                            "value": str(int(profile.tasks.get("retries", 2)))})

    worker = spec["spec"]["worker"]
    worker["metadata"] = _metadata(cfg, "worker")
    # resqpy's import (~2 s) happens at worker start, not in the worker's first task
    for module in cfg.get("worker_preload") or []:
        worker["spec"]["containers"][0]["args"] += ["--preload", str(module)]
    # extra args last, so they may also override make_worker_spec's (e.g. --dashboard-address)
    worker["spec"]["containers"][0]["args"] += [str(a) for a in cfg.get("worker_extra_args") or []]
    _adapt_pod(worker["spec"], cfg, volumes, mounts, cfg.get("resources"))
    for part in (scheduler, worker):
        for c in part["spec"]["containers"]:
            c["args"] = args_prefix + c["args"]
    return spec


def kubecluster_kwargs(profile, worker_env: dict[str, str]) -> dict:
    cfg = profile.cluster
    kwargs: dict[str, Any] = {
        "custom_cluster_spec": cluster_spec(profile, worker_env),
        "n_workers": 0,
        "shutdown_on_close": bool(cfg.get("shutdown_on_close", True)),
    }
    for key in ("namespace", "resource_timeout", "port_forward_cluster_ip", "scheduler_forward_port"):
        if cfg.get(key) is not None:
            kwargs[key] = cfg[key]
    return kwargs


class KubernetesBackend:
    """A profile for the dask-kubernetes operator; building it checks the options (ProfileError)."""

    def __init__(self, profile, worker_env: dict[str, str]):
        self.profile = profile
        self.worker_env = worker_env
        from dask_kubernetes.exceptions import ValidationError
        try:
            cluster_spec(profile, worker_env)
        except KeyError as e:
            raise ProfileError(f"{profile.origin(('cluster', 'name'))}: cluster.name: unknown placeholder {e} "
                               f"(expected {{user}}, {{uuid}})") from None
        except ValidationError as e:            # the operator's rule for names
            raise ProfileError(f"{profile.origin(('cluster', 'name'))}: cluster.name: {e.message}") from None
        except ValueError as e:                 # a shared volume without a claim, a stray brace
            raise ProfileError(f"{profile.origin(('cluster',))}: {e}") from None

    def render(self) -> str:
        spec = cluster_spec(self.profile, self.worker_env)
        scaling = self.profile.scaling
        if scaling.get("adaptive"):
            how = f"adaptive {scaling['adaptive'].get('minimum', 0)}..{scaling['adaptive']['maximum']} workers"
        else:
            how = f"{scaling.get('workers', 1)} workers"
        cfg = self.profile.cluster
        head = [
            "# DaskCluster for the dask-kubernetes operator, created by resqmp launch through",
            "# dask_kubernetes.operator.KubeCluster(custom_cluster_spec=..., shutdown_on_close="
            f"{cfg.get('shutdown_on_close', True)}).",
            f"# Workers start at 0 replicas; resqmp scales the default worker group to {how}",
            "# once its client is connected. {uuid} in the name is new for each launch.",
        ]
        return "\n".join(head) + "\n---\n" + yaml.safe_dump(spec, sort_keys=False)

    def start(self):
        from resqmp.backends.kubecluster import ResqmpKubeCluster   # dask_kubernetes: only when used
        return ResqmpKubeCluster(**kubecluster_kwargs(self.profile, self.worker_env))


def dashboard_access(cluster, link: str) -> str:
    """kubectl's port-forward to the scheduler Service, for a link that only resolves inside the
    cluster (a launcher in a pod; outside, KubeCluster forwards the port itself: a localhost link)."""
    from urllib.parse import urlsplit
    parts = urlsplit(link)
    if parts.hostname in ("127.0.0.1", "localhost", "::1") or not parts.port:
        return ""
    return (f"dashboard from your own machine: kubectl -n {cluster.namespace} port-forward "
            f"svc/{cluster.name}-scheduler {parts.port}:{parts.port}, then open http://localhost:{parts.port}{parts.path}")


def worker_pods_view(namespace: str, name: str) -> str:
    """Worker pods of the cluster and their phase (pending pods: no room, image pulls...)."""
    try:
        import kr8s

        pods = kr8s.get("pods", namespace=namespace,
                        label_selector={"dask.org/cluster-name": name, "dask.org/component": "worker"})
        lines = []
        for pod in pods:
            phase = pod.status.get("phase", "?")
            waiting = [c.get("state", {}).get("waiting", {}).get("reason")
                       for c in pod.status.get("containerStatuses", []) or []]
            reason = ", ".join(r for r in waiting if r)
            lines.append(f"{pod.name}: {phase}{' (' + reason + ')' if reason else ''}")
        return "\n".join(lines)
    except Exception as e:       # diagnostics only: never fail a run for them
        return f"(could not list worker pods: {e})"
