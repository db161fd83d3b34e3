"""Fixtures for the SLURM/SGE tests: real single-node schedulers, started by ci/<scheduler>/start.sh
when they are not answering (idempotent, ~10 s; installs the packages on a fresh machine), and the
two-node SLURM of ci/slurm/start-multinode.sh (`slurm_multinode`), which runs beside them.

The fixtures are registered once, as a plugin (conftest.py's pytest_plugins), so each session
fixture runs once per session; test modules take the helpers with `from hpc_fixtures import *`.
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

from conftest import BIN, REPO, TESTS, run_resqmp, slow_batch

STATE_DIR = Path(os.environ.get("STATE_DIR", "/tmp/hpc-ci"))
SHARED = Path(os.environ.get("SHARED_DIR", STATE_DIR / "shared"))
SGE_ENV = {"SGE_ROOT": "/var/lib/gridengine", "SGE_CELL": "default"}
NEEDED_SLOTS = 2
LEAKED_BY_NANNIES = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                     "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED"}

#: the profiles of the CI schedulers that ci/<scheduler>/start.sh starts
PROFILES = {name: REPO / "ci" / "profiles" / f"{name}-ci.yaml" for name in ("slurm", "sge")}
PROFILES["slurm-multinode"] = REPO / "ci" / "profiles" / "slurm-multinode.yaml"

# The two-node SLURM (names and addresses as in ci/slurm/multinode.env): its clients find it only
# through SLURM_CONF, so every command and launch for it gets MN_ENV.
MN_ENV = {"SLURM_CONF": "/etc/slurm-resqmp-mn/slurm.conf"}
MN_SHARED = Path(os.environ.get("MN_SHARED_DIR", "/tmp/hpc-ci-mn/shared"))
MN_NODES = {"rqmn-c1": "10.211.77.11", "rqmn-c2": "10.211.77.12"}   # node name -> its address
MN_RUN = Path("/run/resqmp-mn")

# helpers only: the fixtures come from the plugin registration, never from a module's namespace
__all__ = ["REPO", "TESTS", "SHARED", "BIN", "PROFILES", "launch", "wait_until", "scheduler_jobs", "sh",
           "MN_ENV", "MN_SHARED", "MN_NODES", "mn_node_pid", "report_of", "assert_same_model", "write_batch", "tls_dirs", "registered_worker_jobs",
           "slow_batch", "unique"]


def unique(prefix: str = "q") -> str:
    """A job name no other test uses; qstat shows 10 characters of a name, so keep prefixes short."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


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


def mn_node_pid(node: str) -> int | None:
    """PID of the slurmd of one node of the two-node SLURM (it lives in the node's namespaces)."""
    try:
        pid = int((MN_RUN / f"slurmd-{node}.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _seen_on_node(node: str, path: Path) -> os.stat_result | None:
    """stat() of path as the node sees it (through /proc/PID/root of its slurmd's mount namespace)."""
    pid = mn_node_pid(node)
    try:
        return os.stat(f"/proc/{pid}/root{path}") if pid else None
    except OSError:
        return None


def _multinode_ok() -> bool:
    if not shutil.which("sinfo") or not Path(MN_ENV["SLURM_CONF"]).is_file():
        return False
    try:
        out = sh("sinfo", "-h", "-N", "-o", "%N %t", timeout=10, env=MN_ENV).stdout
    except subprocess.TimeoutExpired:
        return False
    states = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
    if set(states) != set(MN_NODES) or not all(s.rstrip("*") in ("idle", "mix", "alloc") for s in states.values()):
        return False
    # every node must still see this host's shared directory (the same folder, not a stale mount
    # of one that was removed and made again), this interpreter (the workers' python) and tests/
    # (the test wrappers)
    try:
        here = os.stat(MN_SHARED)
    except OSError:
        return False
    for node in MN_NODES:
        there = _seen_on_node(node, MN_SHARED)
        if there is None or (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino):
            return False
        if _seen_on_node(node, Path(sys.executable)) is None or _seen_on_node(node, TESTS) is None:
            return False
    return True


def _ensure(name: str, ok, script: str = "start.sh", env: dict | None = None) -> None:
    if ok():
        SHARED.mkdir(parents=True, exist_ok=True)
        return
    script = REPO / "ci" / name / script
    # The daemons inherit this environment. Keep out what distributed's nanny exported into this
    # process when an earlier test started a LocalCluster (OMP_NUM_THREADS=1 and the like).
    env = {**{k: v for k, v in os.environ.items() if k not in LEAKED_BY_NANNIES}, **(env or {})}
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
def slurm_multinode():
    """The two-node SLURM (controller here, compute nodes rqmn-c1 and rqmn-c2 in namespaces of
    their own), started by ci/slurm/start-multinode.sh when it is not answering; it runs beside the
    single-node one. Its nodes see MN_SHARED, and this checkout and interpreter even when they are
    under /tmp (which is node-local there)."""
    share = ":".join(str(p) for p in (REPO, Path(sys.prefix), Path(sys.executable).resolve().parent))
    _ensure("slurm", _multinode_ok, script="start-multinode.sh", env={"MN_SHARE_PATHS": share})
    MN_SHARED.mkdir(parents=True, exist_ok=True)
    return MN_ENV


@pytest.fixture(scope="session")
def sge():
    """A responding single-node SGE (queue all.q)."""
    os.environ.update(SGE_ENV)
    _ensure("sge", _sge_ok)
    return "sge"


@pytest.fixture(scope="session")
def hpc_workdir():
    """A folder for this session under the shared directory the CI profiles use."""
    SHARED.mkdir(parents=True, exist_ok=True)
    path = SHARED / f"pytest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def hpc_example(hpc_workdir):
    """A small example model (4 fault surfaces) on shared storage; read-only for tests."""
    from resqmp.example import write_example
    return write_example(hpc_workdir / "example", surfaces=4)


@pytest.fixture(scope="session")
def local_reference(hpc_example, hpc_workdir):
    """The same find-faces batch through `--profile local`: the output HPC runs must match."""
    out = hpc_workdir / "local" / "faults.epc"
    out.parent.mkdir()
    launch("local", hpc_example["batch"], out, check=0)
    return out


def launch(profile, batch, output, *extra, check=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`resqmp launch` as a user would type it (the venv's resqmp, in a subprocess)."""
    return run_resqmp("launch", "--profile", profile, "--batch", batch, "--output", output, *extra,
                      env={**SGE_ENV, **(env or {})}, timeout=timeout, check=check)


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


