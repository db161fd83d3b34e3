"""resqpy's own example models (block.epc, s_bend.epc, tic_tac_toe.epc and their .h5), for tests
of models resqmp did not write.

They live in example_data/ of resqpy's repository, which neither resqpy's wheel nor its current
sdist ships, and CI reaches PyPI but not GitHub. resqpy 1.6.1's sdist on PyPI (setuptools_scm: every
tracked file) carries example_data/, and those files are byte-identical to example_data/ in resqpy's
repository today (unchanged since June 2021): each extracted file is checked against the git blob id
it has there. Fetched once with `python -m pip download` (pip's index and certificate settings
apply), pinned by sha256, cached in ~/.cache/resqmp/test-data (RESQMP_TEST_DATA_DIR).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "1.6.1"
SDIST_SHA256 = "0a6ee743bd8a8eca46a34209ff0b6444bb8a1676775352d624540461e6aab3f0"
#: git blob ids of example_data/ in bp/resqpy (master at 5e5bfc1e, the same since 0ae828f8, 2021-06-10)
GIT_BLOBS = {
    "block.epc": "24b0a3c7cde104f93670ad127d081e16f5e8d418",
    "block.h5": "d265b2cb23dc6104032cb60d76487891f352717e",
    "s_bend.epc": "73fd96330defbaa41277c6695dce17fbd58fc3aa",
    "s_bend.h5": "b05d433a56756923d32d5c79fb6e129597b02597",
    "tic_tac_toe.epc": "3f615400c4a0a149893da9254059eac3c95bfc7a",
    "tic_tac_toe.h5": "ee959b6a41afdf05902f171a0f320604a6aa699e",
}


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _cache_dir() -> Path:
    base = os.environ.get("RESQMP_TEST_DATA_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "resqmp", "test-data")
    return Path(base) / f"resqpy-{VERSION}-example_data"


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() and _git_blob_id((folder / name).read_bytes()) == blob
               for name, blob in GIT_BLOBS.items())


def example_data() -> Path:
    """The folder holding resqpy's example models (read-only for callers: copy before writing)."""
    folder = _cache_dir()
    if _complete(folder):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"resqpy=={VERSION}"]
        subprocess.run(cmd, check=True, stdout=sys.stderr, timeout=600)
        sdist = Path(tmp) / f"resqpy-{VERSION}.tar.gz"
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        assert digest == SDIST_SHA256, f"{sdist.name}: sha256 {digest} != pinned {SDIST_SHA256}"
        with tarfile.open(sdist) as tar:
            for name, blob in GIT_BLOBS.items():
                data = tar.extractfile(f"resqpy-{VERSION}/example_data/{name}").read()
                assert _git_blob_id(data) == blob, f"{name} differs from resqpy's example_data/{name}"
                part = folder / f".{name}.part"
                part.write_bytes(data)
                part.replace(folder / name)          # atomic: a concurrent caller sees whole files
    return folder
