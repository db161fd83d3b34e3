"""Fixtures for the SLURM/SGE tests: real single-node schedulers, started by ci/<scheduler>/start.sh
when they are not answering (idempotent, ~10 s; installs the packages on a fresh machine).

Test modules use them with `from hpc_fixtures import *`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
CI = REPO / "ci"
STATE_DIR = Path(os.environ.get("STATE_DIR", "/tmp/hpc-ci"))
SHARED = Path(os.environ.get("SHARED_DIR", STATE_DIR / "shared"))
BIN = Path(sys.executable).parent
SGE_ENV = {"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "default"}
NEEDED_SLOTS = 2
LEAKED_BY_NANNIES = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                     "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED"}

__all__ = ["REPO", "TESTS", "CI", "SHARED", "BIN", "slurm", "sge", "hpc_workdir", "hpc_example",
           "local_reference", "launch", "wait_until", "scheduler_jobs", "sh", "report_of", "assert_same_model",
           "write_batch", "tls_dirs", "registered_worker_jobs", "slow_batch"]


def sh(*cmd, timeout=30, env=None, check=False) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_until(predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def _slurm_ok() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        state = sh("sinfo", "-h", "-o", "%t", timeout=10).stdout.split()
    except subprocess.TimeoutExpired:
        return False
    if not state or not all(s.rstrip("*") in ("idle", "mix", "alloc", "comp") for s in state):
        return False
    # the tests run two one-CPU worker jobs (plus a launcher job) side by side
    return sum(int(c) for c in sh("sinfo", "-h", "-o", "%c", timeout=10).stdout.split()) >= NEEDED_SLOTS


def _sge_ok() -> bool:
    if not shutil.which("qstat"):
        return False
    try:
        out = sh("qstat", "-f", "-q", "all.q", timeout=10, env=SGE_ENV).stdout
    except subprocess.TimeoutExpired:
        return False
    # a queue instance with a load report and no error/disabled/unknown state flag
    lines = [ln for ln in out.splitlines() if ln.startswith("all.q@")]
    if not lines or not all(len(ln.split()) == 5 for ln in lines):
        return False
    slots = [ln.split()[2].split("/")[-1] for ln in lines]    # resv/used/tot
    return sum(int(n) for n in slots if n.isdigit()) >= NEEDED_SLOTS


def _ensure(name: str, ok) -> None:
    if ok():
        SHARED.mkdir(parents=True, exist_ok=True)
        return
    script = CI / name / "start.sh"
    # The daemons inherit this environment. Keep out what distributed's nanny exported into this
    # process when an earlier test started a LocalCluster (OMP_NUM_THREADS=1 and the like).
    env = {k: v for k, v in os.environ.items() if k not in LEAKED_BY_NANNIES}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0 or not wait_until(ok, 30):
        pytest.fail(f"{script} could not start {name} (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def slurm():
    """A responding single-node SLURM (partition debug)."""
    _ensure("slurm", _slurm_ok)
    return "slurm"


@pytest.fixture(scope="session")
def sge():
    """A responding single-node SGE (queue all.q)."""
    os.environ.update(SGE_ENV)
    _ensure("sge", _sge_ok)
    return "sge"


# Each test module imports these fixtures, which makes pytest hold one definition per module; the
# expensive results are kept here so the session computes them once.
_SESSION: dict[str, object] = {}


@pytest.fixture(scope="session")
def hpc_workdir():
    """A folder for this session under the shared directory the CI profiles use."""
    if "workdir" not in _SESSION:
        SHARED.mkdir(parents=True, exist_ok=True)
        path = SHARED / f"pytest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        path.mkdir()
        _SESSION["workdir"] = path
    yield _SESSION["workdir"]
    shutil.rmtree(_SESSION["workdir"], ignore_errors=True)


@pytest.fixture(scope="session")
def hpc_example(hpc_workdir):
    """A small example model (4 fault surfaces) on shared storage; read-only for tests."""
    if "example" not in _SESSION:
        from resqmp.example import write_example
        _SESSION["example"] = write_example(hpc_workdir / "example", surfaces=4)
    return _SESSION["example"]


@pytest.fixture(scope="session")
def local_reference(hpc_example, hpc_workdir):
    """The same find-faces batch through `--profile local`: the output HPC runs must match."""
    if "local" not in _SESSION:
        out = hpc_workdir / "local" / "faults.epc"
        out.parent.mkdir()
        launch("local", hpc_example["batch"], out, check=0)
        _SESSION["local"] = out
    return _SESSION["local"]


def launch(profile, batch, output, *extra, check=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`resqmp launch` as a user would type it (the venv's resqmp, in a subprocess)."""
    full_env = {**os.environ, **SGE_ENV, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), full_env.get("PYTHONPATH")]))
    cmd = [str(BIN / "resqmp"), "launch", "--profile", str(profile), "--batch", str(batch),
           "--output", str(output), *map(str, extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}, expected {check}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def scheduler_jobs(backend: str, job_name: str) -> list[str]:
    """Ids of this user's jobs named job_name that the scheduler still lists (pending or running)."""
    if backend == "slurm":
        out = sh("squeue", "-h", "-n", job_name, "-t", "PENDING,RUNNING,CONFIGURING,COMPLETING",
                 "-o", "%i").stdout
        return out.split()
    out = sh("qstat", "-u", "*", env=SGE_ENV).stdout
    ids = []
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) > 3 and job_name.startswith(fields[2]) and "d" not in fields[4]:
            ids.append(fields[0])
    return ids


def report_of(output: Path) -> dict:
    import json
    return json.loads(Path(output).with_suffix(".report.json").read_text())


def assert_same_model(output: Path, reference: Path) -> None:
    """Same parts by (type, title), same face count per grid connection set as the local run."""
    from epc_compare import content
    got, want = content(output), content(reference)
    assert got["parts"] == want["parts"]
    assert got["faces"] == want["faces"] and want["faces"] and all(n > 0 for n in want["faces"].values())


def write_batch(path: Path, wrapper: str, tasks: list[dict], defaults: dict | None = None) -> Path:
    import yaml
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"wrapper": wrapper, "defaults": defaults or {}, "tasks": tasks}, sort_keys=False))
    return path


def tls_dirs() -> set[str]:
    return {p.name for p in SHARED.glob(".resqmp-tls-*")}


def registered_worker_jobs(backend: str, job_name: str, log_dir: Path = SHARED / "logs") -> dict[str, str]:
    """job output file -> scheduler address each worker job registered with (from the worker's log)."""
    pattern = f"{job_name}-*.err" if backend == "slurm" else f"{job_name}.o*"
    found = {}
    for path in sorted(log_dir.glob(pattern)):
        m = re.search(r"Registered to:\s+(\S+)", path.read_text(errors="replace"))
        found[path.name] = m.group(1) if m else ""
    return found


def slow_batch(example: dict, name: str, delay: float = 2.0) -> Path:
    """The example's find-faces batch through tests' slow_find_faces (resqpy's wrapper, then a
    pause): same output, but long enough that every worker job joins and takes tasks. Written next
    to the example's batch (its paths are relative to that folder)."""
    import yaml
    data = yaml.safe_load(Path(example["batch"]).read_text())
    data["wrapper"] = "wrappers_for_tests:slow_find_faces"
    data.setdefault("defaults", {})["delay"] = delay
    path = Path(example["batch"]).with_name(f"batch-slow-{name}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
