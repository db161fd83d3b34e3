"""Shared fixtures: the resqmp command, example models, EPC comparison."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent


def run_resqmp(*args, env=None, timeout=600, cwd=None, check=None) -> subprocess.CompletedProcess:
    """Run the installed `resqmp` command; tests/ is on workers' PYTHONPATH for test wrappers."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), full_env.get("PYTHONPATH")]))
    proc = subprocess.run([str(BIN / "resqmp"), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"resqmp {' '.join(map(str, args))} exited {proc.returncode}, expected {check}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """A small example model with all three batches (read-only for tests: copy before changing)."""
    from resqmp.example import write_example
    return write_example(tmp_path_factory.mktemp("example"), surfaces=4, wells=3, mesh_properties=2)


@pytest.fixture(scope="session")
def example_with_outside(tmp_path_factory):
    from resqmp.example import write_example
    return write_example(tmp_path_factory.mktemp("example_outside"), surfaces=3, outside_surface=True)
