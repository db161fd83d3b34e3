"""Fixtures and helpers for the container, Helm and Kubernetes tests (all real: the helm binary,
podman, the Kubernetes and DaskCluster CRD schemas; nothing is mocked).

Import the fixtures into a test module with `from k8s_fixtures import *` (tests/ is on pythonpath).
"""
from __future__ import annotations

import copy
import fcntl
import hashlib
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "resqmp"
SETUP_PODMAN = REPO / "ci" / "podman" / "setup.sh"
GET_HELM = REPO / "ci" / "helm" / "get_helm.py"
# Kubernetes version the manifests are validated against: the helm v4.1 client's (kubectl v1.35).
K8S_VERSION = "1.35"
IMAGE_REPO = "localhost/resqmp"
LOCK = Path(os.environ.get("RESQMP_PODMAN_LOCK", "/tmp/resqmp-podman.lock"))

__all__ = ["REPO", "CHART", "K8S_VERSION", "helm", "podman_base_image", "resqmp_image",
           "helm_template", "helm_lint", "validate_k8s", "validate_dask_resource", "crd_validator",
           "image_content_hash", "build_image", "podman", "timings"]


# ---- helm ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def helm() -> str:
    """Path of a helm binary: on PATH, or extracted from the PyPI kubectl-layer wheel."""
    out = subprocess.run([sys.executable, str(GET_HELM)], check=True, capture_output=True, text=True)
    path = out.stdout.strip().splitlines()[-1]
    version = subprocess.run([path, "version", "--short"], check=True, capture_output=True, text=True).stdout
    assert version.startswith(("v3.", "v4.")), version
    return path


def _set_args(values: dict | None, sets: tuple[str, ...], tmp_dir: Path | None) -> list[str]:
    args: list[str] = []
    if values:
        folder = tmp_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        digest = hashlib.sha256(yaml.safe_dump(values).encode()).hexdigest()[:12]
        path = folder / f"resqmp-values-{digest}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    for s in sets:
        args += ["--set", s]
    return args


def helm_template(helm_path: str, *sets: str, values: dict | None = None, release: str = "t",
                  namespace: str = "batch", tmp_dir: Path | None = None, check: bool = True):
    """Render the chart; returns the list of objects (or the CompletedProcess when check=False)."""
    cmd = [helm_path, "template", release, str(CHART), "--namespace", namespace,
           *_set_args(values, sets, tmp_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def helm_lint(helm_path: str, *sets: str, values: dict | None = None, tmp_dir: Path | None = None):
    cmd = [helm_path, "lint", "--strict", str(CHART), *_set_args(values, sets, tmp_dir)]
    return subprocess.run(cmd, capture_output=True, text=True)


# ---- schemas ------------------------------------------------------------------------------------

def validate_k8s(obj: dict) -> None:
    """Strict validation (unknown fields rejected) against the Kubernetes OpenAPI schemas."""
    import kubernetes_validate
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}: "
                             f"{'.'.join(map(str, e.caught.absolute_path))}: {e.caught.message}") from None


def _crd_file(kind: str) -> Path:
    base = Path(str(resources.files("dask_kubernetes"))) / "operator" / "deployment" / "helm" / \
        "dask-kubernetes-operator" / "crds"
    return base / f"{kind.lower()}.yaml"


def _strict(node):
    """OpenAPI v3 structural schema -> JSON schema that rejects unknown fields. The API server
    prunes (drops) unknown fields of a CRD object silently; a test should not."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("nullable"):
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


_CRD_VALIDATORS: dict[str, jsonschema.protocols.Validator] = {}


def crd_validator(kind: str):
    """A validator for a dask-kubernetes custom resource (DaskCluster, DaskWorkerGroup, ...), from
    the CRD that ships in the installed dask-kubernetes."""
    if kind not in _CRD_VALIDATORS:
        crd = yaml.safe_load(_crd_file(kind).read_text())
        assert crd["spec"]["names"]["kind"] == kind
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        group = crd["spec"]["group"]
        schema["properties"] = {
            "apiVersion": {"const": f"{group}/{version['name']}"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
            **schema.get("properties", {}),
        }
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
        schema["additionalProperties"] = False
        _CRD_VALIDATORS[kind] = jsonschema.Draft7Validator(schema)
    return _CRD_VALIDATORS[kind]


def validate_dask_resource(obj: dict) -> None:
    errors = sorted(crd_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in errors[:10]]
        raise AssertionError(f"{obj['kind']} {obj['metadata'].get('name')} does not match the CRD schema:\n"
                             + "\n".join(lines))


# ---- podman -------------------------------------------------------------------------------------

@contextmanager
def _locked():
    """Serialise setup and builds between pytest processes sharing this machine."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def podman(*args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


#: measured durations, printed at the end of the session by the tests that fill them
timings: dict[str, float] = {}


@pytest.fixture(scope="session")
def podman_base_image() -> str:
    """ci/podman/setup.sh (idempotent): podman configured, local Debian base image built."""
    t0 = time.monotonic()
    with _locked():
        out = subprocess.run(["sh", str(SETUP_PODMAN)], capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    timings["podman setup (s)"] = round(time.monotonic() - t0, 1)
    return out.stdout.strip().splitlines()[-1]


def image_content_hash() -> str:
    """Hash of everything the image build reads: a changed file means a new tag."""
    h = hashlib.sha256()
    paths = [REPO / "pyproject.toml", REPO / "README.md", REPO / ".containerignore"]
    for folder in ("containers", "resqmp"):
        paths += sorted(p for p in (REPO / folder).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts
                        and p.suffix not in (".pyc", ".def", ".md"))     # not read by the build
    for p in paths:
        if p.is_file():
            h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_image(base_image: str, tag: str | None = None) -> tuple[str, float]:
    """Build containers/Dockerfile unless an image with this content hash exists.
    Returns (image, seconds spent building; 0 if reused)."""
    image = f"{IMAGE_REPO}:{tag or image_content_hash()}"
    with _locked():
        if podman("image", "exists", image, check=False).returncode == 0:
            return image, 0.0
        cmd = ["build", "--network", "host", "-f", "containers/Dockerfile", "-t", image,
               "--build-arg", f"BASE_IMAGE={base_image}",
               "--build-arg", f"VCS_REF={_git_head()}",
               "--build-arg", f"BUILD_DATE={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"]
        # No registry here, and PyPI is reached through a TLS-intercepting proxy: the host's CA
        # bundle is mounted for the build only (PIP_CERT), never copied into the image.
        ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
        if ca.is_file():
            cmd += ["-v", f"{ca}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
        for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
            if os.environ.get(var) and not os.environ[var].startswith("file:"):
                cmd += ["--build-arg", f"{var}={os.environ[var]}"]
        t0 = time.monotonic()
        proc = subprocess.run(["podman", *cmd, "."], cwd=REPO, capture_output=True, text=True, timeout=2400)
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            raise AssertionError(f"image build failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        _prune_old_images(keep=image)
        return image, seconds


def _prune_old_images(keep: str) -> None:
    """Remove earlier content-hash tags of the image (1 GB each), keeping the layer cache: the
    untagged build-stage images hold the dependency layer that makes rebuilds take ~1 min."""
    listing = podman("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO, check=False).stdout.split()
    for name in listing:
        tag = name.rsplit(":", 1)[-1]
        if name != keep and len(tag) == 16 and all(ch in "0123456789abcdef" for ch in tag):
            podman("rmi", name, check=False)


def _git_head() -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


@pytest.fixture(scope="session")
def resqmp_image(podman_base_image) -> str:
    image, seconds = build_image(podman_base_image)
    timings["image build (s, 0 = reused)"] = round(seconds, 1)
    return image
