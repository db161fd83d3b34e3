"""The Helm chart (helm/resqmp), checked with the real helm binary and validated against the
Kubernetes schemas (kubernetes-validate, strict) and the dask-kubernetes CRD schemas."""
from __future__ import annotations

import pytest
import yaml

from k8s_fixtures import *  # noqa: F401,F403 - fixtures
from k8s_fixtures import helm_lint, helm_template, validate_dask_resource, validate_k8s

MODES = {
    "default": {},
    "standalone": {"cluster": {"mode": "standalone"}},
    "operator": {"cluster": {"mode": "operator"}},
    "operator-adaptive": {"cluster": {"mode": "operator", "adaptive": {"enabled": True, "minimum": 1, "maximum": 8}}},
    "standalone-example": {"cluster": {"mode": "standalone", "workers": 3, "workerDashboard": False},
                           "example": {"enabled": True}},
    "operator-content": {
        "cluster": {"mode": "operator"},
        "batch": {"content": {"wrapper": "find_faces_to_represent_surface_regular",
                              "defaults": {"grid_epc": "/shared/in/model.epc", "surface_epc": "/shared/in/model.epc",
                                           "grid_uuid": "1d2c3b4a-0000-0000-0000-000000000001"},
                              "tasks": [{"surface_uuid": "1d2c3b4a-0000-0000-0000-000000000002", "name": "f1"}]}},
        "storage": {"existingClaim": "site-nfs", "storageClassName": "nfs"},
        "image": {"repository": "registry.example.com/geo/resqmp", "tag": "1.2.3", "pullSecrets": ["regcred"]},
    },
}

POD_KINDS = {"Job", "Deployment"}


def _pod_specs(objects):
    for o in objects:
        if o["kind"] in POD_KINDS:
            yield o, o["spec"]["template"]["spec"]


def _by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("mode", list(MODES))
def test_lint_strict_is_clean(helm, mode, tmp_path):
    proc = helm_lint(helm, values=MODES[mode], tmp_dir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("mode", list(MODES))
def test_every_rendered_object_validates(helm, mode, tmp_path):
    objects = helm_template(helm, values=MODES[mode], tmp_dir=tmp_path)
    kinds = sorted(o["kind"] for o in objects)
    operator = (MODES[mode].get("cluster") or {}).get("mode") == "operator"
    expected = {"ConfigMap", "Job"} | ({"ServiceAccount", "Role", "RoleBinding"} if operator
                                       else {"Deployment", "Service"})
    if not (MODES[mode].get("storage") or {}).get("existingClaim"):
        expected.add("PersistentVolumeClaim")
    assert set(kinds) == expected, kinds
    for obj in objects:
        validate_k8s(obj)
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/component", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert labels.get(key), (obj["kind"], key)
        assert obj["metadata"]["namespace"] == "batch"


@pytest.mark.parametrize("mode", list(MODES))
def test_every_pod_is_restricted(helm, mode, tmp_path):
    objects = helm_template(helm, values=MODES[mode], tmp_dir=tmp_path)
    for obj, spec in _pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] >= 1
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"]
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (obj["metadata"]["name"], c["name"])
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert "command" not in c, "args only: the image entrypoint prepares the numba cache"
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts["/tmp"] == "tmp"      # the only writable place besides the shared volume
            assert mounts["/shared"] == "shared"
            assert c["resources"]["limits"] and c["resources"]["requests"]
        assert spec.get("automountServiceAccountToken") is (obj["kind"] == "Job" and "serviceAccountName" in spec)


def test_job_settings_are_settable(helm, tmp_path):
    objects = helm_template(helm, "job.backoffLimit=2", "job.activeDeadlineSeconds=3600",
                            "job.ttlSecondsAfterFinished=60", "output.path=/shared/runs/a/out.epc",
                            "launch.set[0]=tasks.retries=4", "launch.extraArgs[0]=--keep-task-files",
                            tmp_dir=tmp_path)
    (job,) = _by_kind(objects, "Job")
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"],
            job["spec"]["ttlSecondsAfterFinished"]) == (2, 3600, 60)
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    args = spec["containers"][0]["args"]
    assert args[:4] == ["resqmp", "launch", "--profile", "/etc/resqmp/job/profile.yaml"]
    assert args[args.index("--output") + 1] == "/shared/runs/a/out.epc"
    assert args[args.index("--batch") + 1] == "/shared/input/batch.yaml"
    assert ["--set", "tasks.retries=4"] == args[args.index("--set"):args.index("--set") + 2]
    assert args[-1] == "--keep-task-files"
    prepare = next(c for c in spec["initContainers"] if c["name"] == "prepare")
    assert prepare["args"][:3] == ["mkdir", "-p", "/shared/runs/a"]
    # unset: no deadline, no ttl
    objects = helm_template(helm, "job.activeDeadlineSeconds=null", "job.ttlSecondsAfterFinished=null",
                            tmp_dir=tmp_path)
    (job,) = _by_kind(objects, "Job")
    assert "activeDeadlineSeconds" not in job["spec"] and "ttlSecondsAfterFinished" not in job["spec"]


def _job_profile(objects, tmp_path):
    """The ConfigMap's profile, loaded by resqmp itself (extends the packaged profile)."""
    from resqmp import profiles
    (cm,) = _by_kind(objects, "ConfigMap")
    path = tmp_path / "profile.yaml"
    path.write_text(cm["data"]["profile.yaml"])
    return profiles.load(str(path)), cm


def test_standalone_mode_wires_launcher_scheduler_and_workers(helm, tmp_path):
    objects = helm_template(helm, "cluster.workers=3", "cluster.workerProcesses=2", tmp_dir=tmp_path)
    profile, _ = _job_profile(objects, tmp_path)
    assert profile.backend == "external"
    assert profile.cluster["address"] == "tcp://t-resqmp-scheduler:8786"
    assert profile.storage["shared_directory"] == "/shared/resqmp-tasks"
    (svc,) = _by_kind(objects, "Service")
    deployments = {d["metadata"]["name"]: d for d in _by_kind(objects, "Deployment")}
    sched, workers = deployments["t-resqmp-scheduler"], deployments["t-resqmp-worker"]
    assert svc["metadata"]["name"] == "t-resqmp-scheduler"
    assert svc["spec"]["selector"] == sched["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= sched["spec"]["template"]["metadata"]["labels"].items()
    assert workers["spec"]["replicas"] == 3
    wargs = workers["spec"]["template"]["spec"]["containers"][0]["args"]
    assert wargs[:3] == ["dask", "worker", "tcp://t-resqmp-scheduler:8786"]
    assert wargs[wargs.index("--nworkers") + 1] == "2" and wargs[wargs.index("--nthreads") + 1] == "1"
    assert wargs[wargs.index("--preload") + 1] == "resqpy.multi_processing"   # import before the first task
    claims = {spec_vol["persistentVolumeClaim"]["claimName"]
              for _, spec in _pod_specs(objects) for spec_vol in spec["volumes"] if "persistentVolumeClaim" in spec_vol}
    assert claims == {"t-resqmp-shared"}


def test_worker_env_in_the_chart_is_resqmp_worker_environment(helm, tmp_path):
    """Standalone workers get their environment from the pod spec, not from resqmp: the chart's
    defaults must be what resqmp would give them (kubernetes profile)."""
    from resqmp import profiles
    from resqmp.worker_env import worker_environment
    expected = worker_environment(profiles.load("kubernetes"))
    objects = helm_template(helm, tmp_dir=tmp_path)
    for obj, spec in _pod_specs(objects):
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
        assert {k: env.get(k) for k in expected} == expected, obj["metadata"]["name"]
    objects = helm_template(helm, "env.NUMBA_NUM_THREADS=2", "env.EXTRA=x", tmp_dir=tmp_path)
    (job,) = _by_kind(objects, "Job")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NUMBA_NUM_THREADS"] == "2" and env["EXTRA"] == "x"


def test_operator_mode_profile_renders_a_valid_daskcluster(helm, tmp_path):
    """Operator mode: the ConfigMap profile, loaded by resqmp and rendered by the kubernetes
    backend, is the DaskCluster the Job will create; it must match the CRD schema."""
    from resqmp.backends import kubernetes
    from resqmp.worker_env import worker_environment
    objects = helm_template(helm, "cluster.mode=operator", "cluster.workers=4",
                            "image.repository=registry.example.com/resqmp", "image.tag=9.9",
                            "cluster.nodeSelector.pool=batch", tmp_dir=tmp_path)
    profile, _ = _job_profile(objects, tmp_path)
    assert profile.backend == "kubernetes" and profile.scaling["workers"] == 4
    assert profile.cluster["worker_preload"] == ["resqpy.multi_processing"]
    spec = kubernetes.cluster_spec(profile, worker_environment(profile))
    validate_dask_resource(spec)
    assert spec["metadata"]["name"].startswith("t-resqmp-") and spec["metadata"]["namespace"] == "batch"
    for part in ("scheduler", "worker"):
        pod = spec["spec"][part]["spec"]
        (c,) = pod["containers"]
        assert c["image"] == "registry.example.com/resqmp:9.9"
        assert pod["nodeSelector"] == {"pool": "batch"}
        assert {"name": "shared", "persistentVolumeClaim": {"claimName": "t-resqmp-shared", "readOnly": False}} in pod["volumes"]
        assert spec["spec"][part]["metadata"]["labels"]["app.kubernetes.io/instance"] == "t"
    (job,) = _by_kind(objects, "Job")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "t-resqmp-launcher"
    # adaptive
    objects = helm_template(helm, "cluster.mode=operator", "cluster.adaptive.enabled=true",
                            "cluster.adaptive.maximum=7", tmp_dir=tmp_path)
    profile, _ = _job_profile(objects, tmp_path)
    assert profile.scaling["adaptive"] == {"minimum": 0, "maximum": 7}


def test_operator_rbac_is_limited_to_dask_resources_in_the_namespace(helm, tmp_path):
    objects = helm_template(helm, "cluster.mode=operator", tmp_dir=tmp_path)
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = _by_kind(objects, "Role")
    (binding,) = _by_kind(objects, "RoleBinding")
    (sa,) = _by_kind(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "batch"}]
    writes = set()
    for rule in role["rules"]:
        writing = set(rule["verbs"]) - {"get", "list", "watch"}
        if writing:
            assert rule["apiGroups"] == ["kubernetes.dask.org"], rule
            writes |= set(rule["resources"])
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"]
    assert writes == {"daskclusters", "daskworkergroups", "daskautoscalers"}
    # standalone mode needs no API access at all
    objects = helm_template(helm, tmp_dir=tmp_path)
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding", "ServiceAccount")]


def test_created_pvc_is_kept_and_an_existing_claim_is_used(helm, tmp_path):
    objects = helm_template(helm, tmp_dir=tmp_path)
    (pvc,) = _by_kind(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and "storageClassName" not in pvc["spec"]
    objects = helm_template(helm, "storage.existingClaim=team-nfs", tmp_dir=tmp_path)
    assert not _by_kind(objects, "PersistentVolumeClaim")
    for _, spec in _pod_specs(objects):
        assert {"name": "shared", "persistentVolumeClaim": {"claimName": "team-nfs"}} in spec["volumes"]


def test_content_batch_goes_into_the_configmap(helm, tmp_path):
    objects = helm_template(helm, values=MODES["operator-content"], tmp_dir=tmp_path)
    (cm,) = _by_kind(objects, "ConfigMap")
    batch = yaml.safe_load(cm["data"]["batch.yaml"])
    assert batch["wrapper"] == "find_faces_to_represent_surface_regular" and len(batch["tasks"]) == 1
    (job,) = _by_kind(objects, "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--batch") + 1] == "/etc/resqmp/job/batch.yaml"


BAD_VALUES = [
    "cluster.mode=kubernetes",
    "cluster.workers=two",
    "cluster.workers=0",
    "cluster.workerThreads=1.5",
    "cluster.adaptive.enabled=yes-please",
    "cluster.resources.requests.cpu=lots",
    "cluster.address=scheduler",
    "image.pullPolicy=Sometimes",
    "image.repository=",
    "storage.accessModes[0]=ReadWriteAlways",
    "storage.mountPath=shared",
    "storage.size=big",
    "output.path=relative/out.epc",
    "output.path=/shared/out.h5",
    "job.backoffLimit=-1",
    "job.activeDeadlineSeconds=0",
    "job.ttlSecondsAfterFinished=soon",
    "securityContext.runAsUser=0",
    "securityContext.privileged=true",
    "launch.logLevel=LOUD",
    "workerEnv.BAD-NAME=1",
    "example.surfaces=0",
    "nameOverride=Not_A_DNS_Name",
    "batch.allowedWrappers[0]=os.system",
    "batch.allowedWrappers[0]=site:os.system",
    "notAValue=1",
]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_schema_rejects_wrong_values(helm, bad, tmp_path):
    proc = helm_template(helm, bad, tmp_dir=tmp_path, check=False)
    assert proc.returncode != 0, f"{bad} was accepted"
    assert "schema" in proc.stderr, proc.stderr
    assert helm_lint(helm, bad, tmp_dir=tmp_path).returncode != 0


def test_nothing_to_run_is_an_error(helm, tmp_path):
    proc = helm_template(helm, "batch.file=", tmp_dir=tmp_path, check=False)
    assert proc.returncode != 0 and "nothing to run" in proc.stderr


def test_chart_metadata_and_notes(helm, tmp_path):
    import subprocess
    from k8s_fixtures import CHART
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "resqmp"
    # NOTES.txt is not an object: `helm install --dry-run=client` renders it without a cluster
    proc = subprocess.run([helm, "install", "t", str(CHART), "--dry-run=client", "--namespace", "batch",
                           "--set", "cluster.mode=operator"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n batch logs -f job/t-resqmp-launch" in notes and "dask-kubernetes-operator" in notes
    assert (CHART / "README.md").is_file()


def test_allowed_wrappers_reach_the_profile_and_default_to_none(helm, tmp_path):
    """The chart's allow-list is the profile's tasks.allowed_wrappers, checked by resqmp's schema;
    empty by default: only resqpy's wrappers run (issue 9)."""
    for mode in ("standalone", "operator"):
        profile, _ = _job_profile(helm_template(helm, f"cluster.mode={mode}", tmp_dir=tmp_path), tmp_path)
        assert not profile.tasks.get("allowed_wrappers")
        objects = helm_template(helm, f"cluster.mode={mode}", "batch.allowedWrappers[0]=sitewrappers:*",
                                "batch.allowedWrappers[1]=geo.faults:run", tmp_dir=tmp_path)
        profile, _ = _job_profile(objects, tmp_path)
        assert profile.tasks["allowed_wrappers"] == ["sitewrappers:*", "geo.faults:run"]
        assert profile.tasks.get("retries") == 2          # the base profile's other task settings stay
