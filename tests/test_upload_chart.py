"""The Helm chart's upload values: the user's wrapper modules from a ConfigMap reach the launcher,
which ships them to the workers. Rendered with the real helm binary (helm's own --set-file) and
validated; then played with podman in standalone mode, where the image holds only resqpy and
resqmp and the workers run the uploaded module."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from k8s_fixtures import *  # noqa: F401,F403 - fixtures
from k8s_fixtures import CHART, helm_lint, helm_template, podman, timings, validate_k8s
from user_project import module_source

RENDER = ("--namespace", "batch")


def _render(helm, *args, tmp_path, check=True):
    proc = subprocess.run([helm, "template", "t", str(CHART), *RENDER, *args], capture_output=True, text=True)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _launcher(objects):
    (job,) = [o for o in objects if o["kind"] == "Job"]
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def test_upload_values_put_the_modules_on_the_launcher_and_pass_upload(helm, tmp_path):
    module = tmp_path / "my_wrappers.py"
    module.write_text(module_source("chart"))
    objects = _render(helm, "--set-file", f"upload.files.my_wrappers\\.py={module}",
                      "--set", "upload.configMap.name=site-code",
                      "--set", "upload.configMap.files[0]=site_wrappers.py", tmp_path=tmp_path)
    for obj in objects:
        validate_k8s(obj)
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "t-resqmp-upload"]
    assert cm["data"] == {"my_wrappers.py": module.read_text()}          # byte for byte
    spec, launcher = _launcher(objects)
    args = launcher["args"]
    uploads = [args[i + 1] for i, a in enumerate(args) if a == "--upload"]
    assert uploads == ["/etc/resqmp/upload/my_wrappers.py", "/etc/resqmp/upload-configmap/site_wrappers.py"]
    mounts = {m["mountPath"]: m for m in launcher["volumeMounts"]}
    assert mounts["/etc/resqmp/upload"]["readOnly"] and mounts["/etc/resqmp/upload-configmap"]["readOnly"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/etc/resqmp/upload"]["name"]]["configMap"] == {"name": "t-resqmp-upload"}
    assert volumes[mounts["/etc/resqmp/upload-configmap"]["name"]]["configMap"] == {
        "name": "site-code", "items": [{"key": "site_wrappers.py", "path": "site_wrappers.py"}]}
    # only the launcher gets the modules: workers receive them from it, through Dask
    for obj in objects:
        if obj["kind"] == "Deployment":
            names = {v["name"] for v in obj["spec"]["template"]["spec"]["volumes"]}
            assert not names & {"upload", "upload-configmap"}
    proc = helm_lint(helm, values={"upload": {"files": {"my_wrappers.py": module.read_text()}}}, tmp_dir=tmp_path)
    assert proc.returncode == 0 and "[WARNING]" not in proc.stdout, proc.stdout + proc.stderr
    # no upload: no ConfigMap, no mount, no --upload
    objects = helm_template(helm, tmp_dir=tmp_path)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"] == ["t-resqmp-job"]
    assert "--upload" not in _launcher(objects)[1]["args"]


@pytest.mark.parametrize("sets, says", [
    (["upload.files.my-wrappers\\.py=x = 1"], "invalid propertyName 'my-wrappers.py'"),
    (["upload.files.wrappers\\.txt=x = 1"], "invalid propertyName 'wrappers.txt'"),
    (["upload.configMap.name=site-code"], "upload.configMap.files: list the module files"),
    (["upload.configMap.files[0]=site_wrappers.py"], "upload.configMap.name"),
    (["upload.configMap.name=site-code", "upload.configMap.files[0]=../etc/passwd"], "/upload/configMap/files/0"),
])
def test_bad_upload_values_are_refused(helm, tmp_path, sets, says):
    args = [a for s in sets for a in ("--set", s)]
    proc = _render(helm, *args, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr


# ---- played with podman: standalone mode ------------------------------------------------------

@pytest.mark.podman
def test_standalone_chart_workers_run_a_module_from_a_configmap(resqmp_image, helm, tmp_path):
    from test_container import _for_podman, _free_port
    from resqmp.example import write_example
    suffix = secrets.token_hex(3)
    release, volume = f"ku{suffix}", f"resqmp-test-{suffix}"
    port = _free_port()
    repo, tag = resqmp_image.rsplit(":", 1)
    # the model and a batch naming the user's wrapper, on the shared volume (relative paths)
    example = write_example(tmp_path / "example", surfaces=4)
    batch = yaml.safe_load(Path(example["batch"]).read_text())
    batch["wrapper"] = "my_wrappers:find_faces_ijk"
    batch["defaults"]["log_dir"] = "marks"
    objects = helm_template(helm, release=release, tmp_dir=tmp_path, values={
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "storage": {"existingClaim": volume},
        "cluster": {"mode": "standalone", "address": f"tcp://127.0.0.1:{port}", "schedulerPort": port,
                    "schedulerDashboardPort": _free_port(), "workers": 1, "workerProcesses": 2,
                    "workerDashboard": False, "workerTimeout": 300},
        "batch": {"file": "/shared/input/batch.yaml", "allowedWrappers": ["my_wrappers:find_faces_ijk"]},
        "output": {"path": "/shared/output/faults.epc"},
        "upload": {"files": {"my_wrappers.py": module_source("from-configmap")}},
    })
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump_all(_for_podman(objects, suffix), sort_keys=False))
    podman("volume", "create", volume)
    configmaps = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    try:
        shared = Path(podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip())
        (shared / "input").mkdir()
        for name in ("model.epc", "model.h5"):
            shutil.copy(Path(example["batch"]).parent / name, shared / "input" / name)
        (shared / "input" / "batch.yaml").write_text(yaml.safe_dump(batch, sort_keys=False))
        for path in [shared, *shared.rglob("*")]:
            os.chown(path, 1000, 1000)     # what fsGroup does on a real cluster
        t0 = time.monotonic()
        podman("kube", "play", "--network", "host", str(kube), timeout=300)
        launcher = f"{release}-resqmp-launch-launcher"
        code = podman("wait", launcher, timeout=900).stdout.strip()
        timings["standalone chart with an uploaded module, 4 tasks (s)"] = round(time.monotonic() - t0, 1)
        logs = podman("logs", launcher, check=False)
        assert code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
        report = json.loads((shared / "output" / "faults.report.json").read_text())
        assert report["totals"]["succeeded"] == 4 and report["backend"] == "external"
        assert report["uploads"][0]["path"] == "/etc/resqmp/upload/my_wrappers.py"
        marks = [json.loads(p.read_text()) for p in sorted((shared / "input" / "marks").glob("task-*.json"))]
        assert len(marks) == 4
        for mark in marks:       # run by the worker pods, from their copy of the upload
            assert mark["version"] == "from-configmap"
            assert mark["file"].startswith("/tmp/") and "/resqmp-upload/" in mark["file"], mark
        assert {m["worker"] for m in marks} <= {t["worker"] for t in report["tasks"]}
        # the image alone does not have the module: the upload is what brought it
        worker = f"{release}-resqmp-worker-pod-0-worker"
        proc = podman("exec", worker, "python", "-c", "import my_wrappers", check=False)
        assert proc.returncode != 0 and "No module named 'my_wrappers'" in proc.stderr, proc.stderr
    finally:
        podman("kube", "down", str(kube), check=False)
        for name in podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split():
            if name == volume or name in configmaps or name.endswith(f"-{suffix}"):
                podman("volume", "rm", "-f", name, check=False)
