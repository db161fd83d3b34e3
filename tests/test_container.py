"""The resqmp image, built for real with podman from a locally made Debian base (no registry is
reachable), run as the launcher of a local cluster, and the Helm chart's standalone mode run with
`podman kube play` (scheduler, worker and launcher pods sharing one volume).

ci/podman/setup.sh installs and configures podman on a fresh machine; the image is rebuilt only
when containers/, resqmp/ or pyproject.toml change (tagged with their content hash).
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path

import pytest
import yaml

from k8s_fixtures import *  # noqa: F401,F403 - fixtures
from k8s_fixtures import helm_template, podman, timings

pytestmark = pytest.mark.podman

# Whether a worker loaded resqpy's compiled code from the image's numba cache or compiled it is
# read from numba's own counters (resqmp.numba_stats: a miss is a compile), never from a time: a
# quick machine JITs the find-faces path in ~2 s, a loaded one takes as long to load it.

# Preloaded into the workers of a launch (cluster.preload): numba's counters of the worker
# process, written to /shared/numba-stats when the worker closes.
NUMBA_PROBE = """
import json, os
from resqmp.numba_stats import resqpy_numba_stats

def dask_teardown(worker):
    with open(os.path.join("/shared/numba-stats", f"{os.getpid()}.json"), "w") as f:
        json.dump({"worker": worker.address, **resqpy_numba_stats()}, f)
"""

# Run with the image's python against a running scheduler: each worker's numba counters.
WORKERS_NUMBA_STATS = """
import json, sys
from distributed import Client
from resqmp.numba_stats import resqpy_numba_stats
with Client(sys.argv[1], timeout=60) as client:
    print(json.dumps(client.run(resqpy_numba_stats)))
"""


def _shared_dir(path: Path) -> Path:
    """A host folder the image's non-root user (1000) can write, bind-mounted at /shared."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 1000, 1000)
    return path


def _run(image: str, shared: Path, *args: str, read_only: bool = True, timeout: float = 600):
    opts = ["run", "--rm", "--network", "host", "-v", f"{shared}:/shared"]
    if read_only:
        opts += ["--read-only"]          # podman mounts a tmpfs at /tmp (--read-only-tmpfs)
    return podman(*opts, image, *args, timeout=timeout)


def _report(epc: Path) -> dict:
    return json.loads(epc.with_name(epc.stem + ".report.json").read_text())


def _check_output(stdout: str) -> dict:
    """The JSON line of `warm_numba.py --check`: the first find-faces task's seconds and numba's
    counters after it."""
    return json.loads(stdout.splitlines()[-1])


def _assert_loaded_from_the_cache(stats: dict, cache_dir: str | None = None) -> None:
    """numba loaded resqpy's compiled code from the cache and compiled none of it."""
    assert stats["cache_enabled"] is True, stats
    assert cache_dir is None or stats["cache_dir"] == cache_dir, stats
    assert stats["cache_hits"] > 0 and stats["cache_misses"] == 0, stats


def _first_task_per_worker(report: dict) -> dict[str, float]:
    first: dict[str, tuple[int, float]] = {}
    for t in report["tasks"]:
        if t["worker"] and (t["worker"] not in first or t["index"] < first[t["worker"]][0]):
            first[t["worker"]] = (t["index"], t["seconds"])
    return {w: s for w, (_, s) in first.items()}


def _gcs_count(epc: Path) -> int:
    import resqpy.model as rq
    model = rq.Model(str(epc), quiet=True)
    try:
        return len(model.uuids(obj_type="GridConnectionSetRepresentation"))
    finally:
        model.h5_release()


# ---- the image ----------------------------------------------------------------------------------

def test_image_is_non_root_without_compilers_and_labelled(resqmp_image):
    info = json.loads(podman("image", "inspect", resqmp_image).stdout)[0]
    config = info["Config"]
    assert config["User"].split(":")[0] == "1000"
    labels = config.get("Labels") or {}
    for key in ("title", "description", "version", "revision", "created", "licenses", "source", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert config["Entrypoint"] == ["/opt/resqmp/bin/resqmp-entrypoint"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["RESQPY_NUMBA_CACHE"] == "true" and env["NUMBA_CPU_NAME"] == "generic"
    assert env["NUMBA_CACHE_DIR"] == "/opt/resqmp/numba-cache" and env["PYTHONNOUSERSITE"] == "1"
    assert not any(k.startswith("PIP_") for k in env), "pip build settings leaked into the image"
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", resqmp_image).stdout
    assert "PIP_" not in history, "pip build arguments recorded in the final image's history"
    out = podman("run", "--rm", resqmp_image, "sh", "-c",
                 "id -u; for c in gcc cc g++ c++ clang make ld; do command -v $c; done; "
                 "ls /opt/resqmp/numba-cache | wc -l; test ! -s /run/host-ca.crt && echo no-ca").stdout.split()
    assert out[0] == "1000"
    assert out[1:-2] == [], f"compilers in the final image: {out[1:-2]}"
    assert int(out[-2]) > 0, "numba cache missing"
    # the build-time CA bundle: podman leaves an empty mount point behind, never the content
    assert out[-1] == "no-ca"


def test_read_only_root_uses_a_writable_copy_of_the_numba_cache(resqmp_image, tmp_path):
    """numba only caches in a folder it can write; with a read-only root the entrypoint copies the
    pre-compiled cache to /tmp, and a fresh interpreter's first find-faces call loads from it."""
    shared = _shared_dir(tmp_path / "shared")
    out = _run(resqmp_image, shared, "sh", "-c",
               'echo "$NUMBA_CACHE_DIR"; python /opt/resqmp/lib/warm_numba.py --check').stdout.splitlines()
    assert out[0].startswith("/tmp/resqmp-numba-cache-")
    check = _check_output("\n".join(out))
    timings["first find-faces call, fresh interpreter, read-only root (s)"] = check["first find-faces task (s)"]
    _assert_loaded_from_the_cache(check, cache_dir=out[0])
    # Control: the same call without the cache compiles (misses, no hits), so the check above can tell.
    cold = _check_output(podman("run", "--rm", "--read-only", "-e", "RESQPY_NUMBA_CACHE=false", resqmp_image,
                                "python", "/opt/resqmp/lib/warm_numba.py", "--check").stdout)
    timings["first find-faces call without the cache (JIT) (s)"] = cold["first find-faces task (s)"]
    assert cold["cache_enabled"] is False and cold["cache_misses"] > 0 and cold["cache_hits"] == 0, cold
    # An arbitrary non-root uid (OpenShift style) gets its own writable copy too.
    out = podman("run", "--rm", "--read-only", "--user", "12345:0", resqmp_image, "sh", "-c",
                 'echo "$NUMBA_CACHE_DIR $RESQPY_NUMBA_CACHE"').stdout.split()
    assert out == ["/tmp/resqmp-numba-cache-12345", "true"]


def test_example_and_local_launch_in_the_container(resqmp_image, tmp_path):
    shared = _shared_dir(tmp_path / "shared")
    _run(resqmp_image, shared, "resqmp", "example", "--out", "/shared/example", "--surfaces", "6")
    assert (shared / "example" / "model.epc").is_file() and (shared / "example" / "batch.yaml").is_file()
    _shared_dir(shared / "out")
    (shared / "numba_probe.py").write_text(NUMBA_PROBE)
    stats_dir = _shared_dir(shared / "numba-stats")
    t0 = time.monotonic()
    proc = _run(resqmp_image, shared, "resqmp", "launch", "--profile", "local",
                "--batch", "/shared/example/batch.yaml", "--output", "/shared/out/faults.epc",
                "--workers", "2", "--set", "cluster.preload=[/shared/numba_probe.py]")
    timings["resqmp launch --profile local in the container, 6 tasks (s)"] = round(time.monotonic() - t0, 1)
    epc = shared / "out" / "faults.epc"
    assert epc.is_file(), proc.stdout + proc.stderr
    report = _report(epc)
    assert report["totals"]["succeeded"] == 6 and report["exit_code"] == 0
    assert report["profile_source"] == "/etc/resqmp/profiles/local.yaml"   # the image's site profile
    assert _gcs_count(epc) == 6
    first = _first_task_per_worker(report)
    timings["first find-faces task per worker, local profile in container (s)"] = max(first.values())
    # every worker that ran a task loaded the find-faces path from the image's cache, compiled nothing
    stats = {s["worker"]: s for s in (json.loads(p.read_text()) for p in stats_dir.glob("*.json"))}
    assert set(first) <= set(stats), (first, stats)
    for worker in first:
        _assert_loaded_from_the_cache(stats[worker])


def _def_sections(text: str) -> tuple[dict, dict]:
    header, sections, current = {}, {}, None
    for line in text.splitlines():
        if line.startswith("%"):
            current = line.split()[0][1:]
            sections[current] = []
        elif current:
            sections[current].append(line)
        elif ":" in line and not line.startswith("#") and line.strip():
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip()
    return header, {k: "\n".join(v) for k, v in sections.items()}


def test_apptainer_definition_environment_works_on_a_read_only_image(resqmp_image, tmp_path):
    """No Apptainer here (not in Debian, no registry): check the definition's structure and run its
    %environment the way `apptainer exec` sources it (no entrypoint, read-only root, /tmp bound)."""
    from k8s_fixtures import REPO
    header, sections = _def_sections((REPO / "containers" / "resqmp.def").read_text())
    assert header["Bootstrap"] == "oci-archive" and header["From"] == "{{ OCI_ARCHIVE }}"
    assert "OCI_ARCHIVE=" in sections["arguments"]
    env = sections["environment"]
    assert "PYTHONNOUSERSITE=1" in env and "NUMBA_NUM_THREADS=1" in env
    assert "--bind" in (REPO / "containers" / "resqmp.def").read_text()
    shared = _shared_dir(tmp_path / "shared")
    script = env + '\necho "$NUMBA_CACHE_DIR $RESQPY_NUMBA_CACHE $PYTHONNOUSERSITE"\n' \
        "python /opt/resqmp/lib/warm_numba.py --check\n"
    out = podman("run", "--rm", "--read-only", "--entrypoint", "sh", "-v", f"{shared}:/shared",
                 resqmp_image, "-c", script).stdout.splitlines()
    assert out[0] == "/tmp/resqmp-numba-cache-1000 true 1", out
    check = _check_output("\n".join(out))
    timings["first find-faces call, apptainer-style environment (s)"] = check["first find-faces task (s)"]
    _assert_loaded_from_the_cache(check, cache_dir="/tmp/resqmp-numba-cache-1000")


# ---- the chart's standalone mode with podman kube play ------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _for_podman(objects: list[dict], suffix: str) -> list[dict]:
    """What `podman kube play --network host` can run of the rendered chart. Changes are only
    those podman needs: a Job becomes its pod template as a Pod (kube play has no Jobs), Services
    are dropped (host network: the scheduler address is 127.0.0.1), container port declarations
    and HTTP probes are dropped (host networking rejects port mappings; podman runs probes with
    curl, which the image does not have), and emptyDir volumes get per-pod names (podman 4.3
    turns an emptyDir into a named volume that pods would otherwise share)."""
    out = []

    def adapt(pod_name: str, spec: dict) -> None:
        renamed = {}
        for v in spec.get("volumes", []):
            if "emptyDir" in v:
                renamed[v["name"]] = f"{pod_name}-{v['name']}-{suffix}"
                v["name"] = renamed[v["name"]]
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            c.pop("ports", None)
            c.pop("readinessProbe", None)
            c.pop("livenessProbe", None)
            for m in c.get("volumeMounts", []):
                m["name"] = renamed.get(m["name"], m["name"])

    for obj in objects:
        kind = obj["kind"]
        if kind == "ConfigMap":
            out.append(obj)
        elif kind == "Deployment":
            adapt(obj["metadata"]["name"], obj["spec"]["template"]["spec"])
            out.append(obj)
        elif kind == "Job":
            template = obj["spec"]["template"]
            adapt(obj["metadata"]["name"], template["spec"])
            out.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": obj["metadata"]["name"], "labels": template["metadata"]["labels"]},
                        "spec": template["spec"]})
    return out


@pytest.fixture
def standalone_release(resqmp_image, helm, tmp_path):
    """The chart rendered in standalone mode for this image, played with podman; torn down after."""
    suffix = secrets.token_hex(3)
    release = f"kp{suffix}"
    volume = f"resqmp-test-{suffix}"
    port, dashboard = _free_port(), _free_port()
    repo, tag = resqmp_image.rsplit(":", 1)
    objects = helm_template(
        helm, release=release, tmp_dir=tmp_path, values={
            "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
            "storage": {"existingClaim": volume},
            "cluster": {"mode": "standalone", "address": f"tcp://127.0.0.1:{port}", "schedulerPort": port,
                        "schedulerDashboardPort": dashboard, "workers": 1, "workerProcesses": 2,
                        "workerDashboard": False, "workerTimeout": 300},
            "example": {"enabled": True, "directory": "/shared/example", "surfaces": 6},
            "output": {"path": "/shared/output/faults.epc"},
        })
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump_all(_for_podman(objects, suffix), sort_keys=False))
    podman("volume", "create", volume)
    mountpoint = podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip()
    os.chown(mountpoint, 1000, 1000)     # what fsGroup does on a real cluster
    configmaps = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    try:
        yield {"release": release, "kube": kube, "volume": Path(mountpoint), "objects": objects,
               "launcher": f"{release}-resqmp-launch-launcher", "image": resqmp_image,
               "address": f"tcp://127.0.0.1:{port}"}
    finally:
        podman("kube", "down", str(kube), check=False)
        leftover = podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
        for name in leftover:
            if name == volume or name in configmaps or name.endswith(f"-{suffix}"):
                podman("volume", "rm", "-f", name, check=False)


def test_standalone_chart_runs_with_podman_kube_play(standalone_release):
    rel = standalone_release
    t0 = time.monotonic()
    podman("kube", "play", "--network", "host", str(rel["kube"]), timeout=300)
    pods = podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
    assert {f"{rel['release']}-resqmp-scheduler-pod-0", f"{rel['release']}-resqmp-worker-pod-0",
            f"{rel['release']}-resqmp-launch"} <= set(pods), pods
    code = podman("wait", rel["launcher"], timeout=900).stdout.strip()
    timings["standalone chart with podman kube play, 6 tasks (s)"] = round(time.monotonic() - t0, 1)
    logs = podman("logs", rel["launcher"], check=False)
    assert code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
    epc = rel["volume"] / "output" / "faults.epc"
    assert epc.is_file()
    report = _report(epc)
    assert report["backend"] == "external" and report["totals"]["succeeded"] == 6
    assert _gcs_count(epc) == 6
    first = _first_task_per_worker(report)
    assert first, report["tasks"]      # usually both worker processes; the scheduler decides
    timings["first find-faces task per worker, chart standalone pods (s)"] = max(first.values())
    timings["workers that ran tasks, chart standalone pods"] = len(first)
    # The scheduler and worker pods outlive the launcher: ask every worker what numba did. Each
    # one that ran a task loaded the find-faces path from the image's cache and compiled nothing.
    stats = json.loads(podman("run", "--rm", "--network", "host", rel["image"], "python", "-c",
                              WORKERS_NUMBA_STATS, rel["address"], timeout=300).stdout.splitlines()[-1])
    assert set(first) <= set(stats), (first, stats)
    for worker in first:
        _assert_loaded_from_the_cache(stats[worker])
    # every container ran as uid 1000, read-only root, no capabilities, no privilege escalation
    for name in podman("ps", "-a", "--format", "{{.Names}}").stdout.split():
        if not name.startswith(rel["release"]):
            continue
        info = json.loads(podman("inspect", name).stdout)[0]
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True, name
        assert info["Config"]["User"].startswith("1000"), name
        assert "no-new-privileges" in host.get("SecurityOpt", []), name
        assert not host.get("CapAdd"), name


def test_zz_report_timings(capsys):
    """Print what the container tests measured (collected last in this module)."""
    with capsys.disabled():
        print("\ncontainer timings:", json.dumps(timings, indent=1))
