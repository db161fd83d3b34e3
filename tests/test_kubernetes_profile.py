"""The kubernetes profile: the DaskCluster it produces, validated against the CRD schema that ships
in dask-kubernetes; and the external backend used by the chart's standalone mode."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import yaml

from conftest import run_resqmp
from k8s_fixtures import validate_dask_resource, validate_k8s
from resqmp import profiles
from resqmp.backends import external, for_profile, kubernetes
from resqmp.errors import ProfileError
from resqmp.worker_env import worker_environment


def _spec(*overrides: str) -> tuple[dict, object]:
    p = profiles.load("kubernetes", overrides)
    return kubernetes.cluster_spec(p, worker_environment(p)), p


def _pods(spec: dict):
    return {part: spec["spec"][part]["spec"] for part in ("scheduler", "worker")}


def test_packaged_profile_renders_a_daskcluster_matching_the_crd():
    spec, p = _spec()
    validate_dask_resource(spec)
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    assert spec["spec"]["worker"]["replicas"] == 0          # resqmp scales after its client is ready
    env = worker_environment(p)
    for part, pod in _pods(spec).items():
        (c,) = pod["containers"]
        assert c["image"] == p.cluster["image"]
        pod_env = {e["name"]: e["value"] for e in c["env"]}
        if part == "scheduler":          # tasks.retries: the scheduler in its pod decides re-runs
            assert pod_env.pop("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES") == str(p.tasks["retries"])
        assert pod_env == env, part      # pod env, not client.run
        assert env["NUMBA_NUM_THREADS"] == "1" and env["NUMBA_CPU_NAME"] == "generic"
        assert {"name": "shared", "mountPath": "/shared"} in c["volumeMounts"]
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert "command" not in c
        # the pod spec itself is a valid core/v1 PodSpec
        validate_k8s({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod})
    wargs = spec["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert wargs[:4] == ["dask", "worker", "--nthreads", "1"]
    assert wargs[wargs.index("--preload") + 1] == "resqpy.multi_processing"
    assert spec["spec"]["scheduler"]["spec"]["containers"][0]["args"][:2] == ["dask", "scheduler"]
    assert spec["spec"]["worker"]["spec"]["containers"][0]["resources"] == p.cluster["resources"]
    assert spec["spec"]["scheduler"]["spec"]["containers"][0]["resources"] == p.cluster["scheduler_resources"]


def test_dask_commands_exist_in_this_distributed():
    """make_cluster_spec names dask-scheduler/dask-worker; distributed ships `dask scheduler`/`dask worker`."""
    for sub in ("scheduler", "worker"):
        proc = subprocess.run([sys.executable, "-m", "dask", sub, "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_cli_render_prints_the_manifest():
    proc = run_resqmp("profiles", "render", "kubernetes", check=0)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(docs) == 1
    validate_dask_resource(docs[0])


@pytest.mark.parametrize("overrides", [
    ("cluster.namespace=geo", "cluster.image=registry.example.com/resqmp:1.0"),
    ("cluster.shared_volume={claim_name: nfs-claim, mount_path: /data, sub_path: team-a}",
     "storage.shared_directory=/data/tasks"),
    ("cluster.worker_extra_args=[--lifetime, 55m, --lifetime-stagger, 4m]", "cluster.tmp_size_limit=null"),
    ("cluster.node_selector={pool: compute}", "cluster.tolerations=[{key: batch, operator: Exists, effect: NoSchedule}]",
     "cluster.image_pull_secrets=[regcred]", "cluster.labels={team: geo}", "cluster.annotations={note: x}"),
    ("cluster.env={EXTRA: '1', NUMBA_NUM_THREADS: '2'}", "environment.FROM_PROFILE=$(HOME)/x"),
    ("cluster.service_account_name=resqmp-workers", "cluster.scheduler_service_type=LoadBalancer"),
    ("cluster.resources={requests: {cpu: 2, memory: 8Gi}}", "cluster.shared_volume=null"),
])
def test_overrides_still_match_the_crd(overrides):
    spec, _ = _spec(*overrides)
    validate_dask_resource(spec)
    for pod in _pods(spec).values():
        validate_k8s({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod})


def test_override_effects():
    spec, _ = _spec("cluster.env={EXTRA: '1', NUMBA_NUM_THREADS: '2'}", "cluster.namespace=geo",
                    "cluster.shared_volume={claim_name: nfs, mount_path: /data, sub_path: a, read_only: true}",
                    "cluster.worker_extra_args=[--lifetime, 55m]", "environment.CACHE=${HOME}/c")
    assert spec["metadata"]["namespace"] == "geo"
    worker = spec["spec"]["worker"]["spec"]
    env = {e["name"]: e["value"] for e in worker["containers"][0]["env"]}
    assert env["EXTRA"] == "1" and env["NUMBA_NUM_THREADS"] == "2"
    # a value with a reference is exported by a shell prefix of the args, where ${HOME} is the
    # container's own (Kubernetes' $(VAR) only knows the pod spec's variables)
    assert "CACHE" not in env
    args = worker["containers"][0]["args"]
    assert args[:2] == ["sh", "-c"] and "export CACHE=\"${HOME}\"/c" in args[2] and args[4:6] == ["dask", "worker"]
    assert {"name": "shared", "mountPath": "/data", "subPath": "a", "readOnly": True} in worker["containers"][0]["volumeMounts"]
    assert worker["containers"][0]["args"][-2:] == ["--lifetime", "55m"]


def test_cluster_name_is_formatted_and_valid():
    spec, _ = _spec("cluster.name=geo-{user}-{uuid}")
    name = spec["metadata"]["name"]
    assert name.startswith("geo-") and "{" not in name
    assert spec["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == name
    with pytest.raises(Exception):
        _spec("cluster.name=Not_Valid_{uuid}")


def test_unknown_cluster_key_is_rejected_with_a_hint():
    with pytest.raises(ProfileError, match="shared_volume"):
        profiles.load("kubernetes", ["cluster.shared_volumes={claim_name: x}"])
    assert {"shared_volume", "image", "namespace", "resources", "env", "worker_command", "idle_timeout",
            "resource_timeout", "scheduler_service_type", "shutdown_on_close"} <= kubernetes.cluster_options()


def test_start_builds_real_kubecluster_arguments():
    """start() cannot reach an API server here; check its KubeCluster call binds to the real
    signature and carries the spec, zero workers and shutdown on close."""
    from dask_kubernetes.operator import KubeCluster
    p = profiles.load("kubernetes", ["cluster.namespace=geo"])
    kwargs = kubernetes.kubecluster_kwargs(p, worker_environment(p))
    inspect.signature(KubeCluster.__init__).bind(None, **kwargs)
    assert kwargs["n_workers"] == 0 and kwargs["shutdown_on_close"] is True and kwargs["namespace"] == "geo"
    validate_dask_resource(kwargs["custom_cluster_spec"])


def test_start_without_an_api_server_fails_fast(tmp_path):
    """start() is real code: here, with no kubeconfig and no API server, it must fail, not hang."""
    code = ("import sys; from resqmp import profiles; from resqmp.backends import kubernetes;"
            "from resqmp.worker_env import worker_environment;"
            "p = profiles.load('kubernetes', ['cluster.resource_timeout=5']);"
            "\ntry:\n kubernetes.KubernetesBackend(p, worker_environment(p)).start()\nexcept Exception as e:\n print('FAILED', type(e).__name__); sys.exit(0)\n"
            "sys.exit('started without an API server?')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(tmp_path / "missing")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "FAILED" in proc.stdout, proc.stdout + proc.stderr


# ---- external --------------------------------------------------------------------------------------

def test_external_profile_start_returns_the_address():
    p = profiles.load("external", ["cluster.address=tcp://t-resqmp-scheduler:8786"])
    cluster = for_profile(p, worker_environment(p)).start()
    assert cluster.scheduler_address == "tcp://t-resqmp-scheduler:8786" and not cluster.manages_workers
    p = profiles.load("external", ["cluster.address=sched.example:8786"])
    assert external.ExternalBackend(p, {}).start().scheduler_address == "tcp://sched.example:8786"
    out = yaml.safe_load(external.ExternalBackend(p, worker_environment(p)).render())
    assert out["scheduler address"] == "tcp://sched.example:8786"


def test_external_profile_rejects_bad_addresses_and_keys():
    with pytest.raises(ProfileError, match="expected PROTOCOL://HOST:PORT"):
        external.ExternalBackend(profiles.load("external", ["cluster.address=tcp://a b:1"]), {})
    with pytest.raises(ProfileError, match="cluster.n_workers"):
        profiles.load("external", ["cluster.n_workers=3"])


def test_external_tls_settings_become_the_clients_security():
    p = profiles.load("external", ["cluster.address=tls://s:8786",
                                   "cluster.security={tls_ca_file: /c/ca.pem, tls_client_cert: /c/c.pem, tls_client_key: /c/k.pem}"])
    cluster = external.ExternalBackend(p, {}).start()
    assert cluster.scheduler_address == "tls://s:8786"
    assert cluster.security.tls_ca_file == "/c/ca.pem" and cluster.security.tls_client_key == "/c/k.pem"
    assert cluster.security.require_encryption is True
