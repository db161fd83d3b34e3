"""Shared fixtures: the resqmp command, example models, EPC comparison."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# the SLURM/SGE session fixtures, registered once for every module that uses them
pytest_plugins = ["hpc_fixtures"]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent


#: what `resqmp launch` in the tests may run besides resqpy's wrappers (tests/wrappers_for_tests.py)
ALLOW_TEST_WRAPPERS = ("--allow-wrapper", "wrappers_for_tests:*")


def run_resqmp(*args, env=None, timeout=600, cwd=None, check=None,
               allow_test_wrappers=True) -> subprocess.CompletedProcess:
    """Run the installed `resqmp` command; tests/ is on workers' PYTHONPATH for test wrappers, and
    `launch` may run them (allow_test_wrappers: --allow-wrapper wrappers_for_tests:*)."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), full_env.get("PYTHONPATH")]))
    if allow_test_wrappers and "launch" in map(str, args[:2]):
        args = (*args, *ALLOW_TEST_WRAPPERS)
    proc = subprocess.run([str(BIN / "resqmp"), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"resqmp {' '.join(map(str, args))} exited {proc.returncode}, expected {check}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def one_error_line(proc, code: int) -> str:
    """The one `resqmp: error:` line of a command that had to exit `code`, without a traceback."""
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{proc.stderr}"
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("resqmp: error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """A small example model with all three batches (read-only for tests: copy before changing)."""
    from resqmp.example import write_example
    return write_example(tmp_path_factory.mktemp("example"), surfaces=4, wells=3, mesh_properties=2)


@pytest.fixture
def work(example, tmp_path):
    """A private, writable copy of the example model and its batches (tmp_path/ex)."""
    dst = tmp_path / "ex"
    shutil.copytree(example["epc"].parent, dst)
    return dst


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes, shared by one module's tests."""
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as c:
        yield c


@pytest.fixture(scope="session")
def slow(tmp_path_factory):
    """8 find-faces tasks that each pause 1 s (tests' slow_find_faces), and resqpy's recombined
    reference of the same work; `slow_batch(slow, ...)` writes variants next to it."""
    from epc_compare import content, resqpy_reference
    from resqmp.example import write_example
    folder = tmp_path_factory.mktemp("slow")
    info = write_example(folder, surfaces=8)
    ref = folder / "ref" / "ref.epc"
    ref.parent.mkdir()
    assert all(resqpy_reference(info["batch"], ref, ref.parent))
    return {"batch": slow_batch(info, "slow", delay=1.0), "reference": content(ref), "folder": folder}


def slow_batch(example: dict, name: str, **defaults) -> Path:
    """The example's find-faces batch through tests' slow_find_faces (resqpy's wrapper, then a
    pause; `delay`, `log_dir` in defaults), written next to the example's batch as
    batch-NAME.yaml (its paths are relative to that folder)."""
    import yaml
    data = yaml.safe_load(Path(example["batch"]).read_text())
    data["wrapper"] = "wrappers_for_tests:slow_find_faces"
    data.setdefault("defaults", {}).update(defaults)
    path = Path(example["batch"]).with_name(f"batch-{name}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def example_with_outside(tmp_path_factory):
    from resqmp.example import write_example
    return write_example(tmp_path_factory.mktemp("example_outside"), surfaces=3, outside_surface=True)


#: a `dask scheduler` process that runs PRELUDE first (Python statements, e.g. making resqmp unimportable)
_SCHEDULER = ("import sys; {prelude}; sys.argv[0] = 'dask-scheduler'; "
              "from distributed.cli.dask_scheduler import main; main()")


@pytest.fixture
def scheduler_process(tmp_path):
    """start(prelude) -> (address, client), once per test: a real `dask scheduler` that runs `prelude` (Python
    statements) before it starts, with one worker that has resqmp as it is here (as the external
    backend's workers must); both stopped at the test's end."""
    from distributed import Client
    from hpc_fixtures import wait_until
    procs, clients = [], []

    def start(prelude: str):
        sched_file = tmp_path / "scheduler.json"
        scheduler = subprocess.Popen([sys.executable, "-c", _SCHEDULER.format(prelude=prelude), "--host",
                                      "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                                      str(sched_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(scheduler)
        assert wait_until(lambda: sched_file.exists() and sched_file.stat().st_size > 0
                          or scheduler.poll() is not None, 120) and scheduler.poll() is None
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", "--nthreads", "1", "--no-dashboard", address],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path))
        client = Client(address)
        clients.append(client)
        client.wait_for_workers(1, timeout=120)
        return address, client

    try:
        yield start
    finally:
        for client in clients:
            client.close()
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)


def resqmp_on_scheduler(client) -> str | None:
    """The version of resqmp the scheduler imports; None when it cannot."""

    # defined here so that it travels by value (tests/ is not on the scheduler either)
    def version(dask_scheduler=None) -> str | None:
        try:
            import resqmp
        except ImportError:
            return None
        return resqmp.__version__

    return client.run_on_scheduler(version)


@pytest.fixture
def scheduler_without_resqmp(scheduler_process):
    """(address, client): a `dask scheduler` that cannot import resqmp, with one worker that can."""
    address, client = scheduler_process("sys.modules['resqmp'] = None")
    assert resqmp_on_scheduler(client) is None
    return address, client
