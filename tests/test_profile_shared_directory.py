"""storage.shared_directory written relative in a profile file is relative to that file's folder,
as tasks.upload is (profiles.py), wherever resqmp runs from: from the current folder, a launch
from another folder put the task files (and, for an HPC backend, TLS files and job logs) somewhere
else each time, and a resume from elsewhere found none of them. On the command line (--set) a
relative path stays relative to the current folder. A value that starts with a variable or ~ is
anchored by its expansion: one that still expands to a relative path is refused (exit 4), naming
the key. Real launches."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from conftest import run_resqmp
from resqmp.errors import ExitCode
from test_bad_inputs import assert_one_line_error


def _profile(folder: Path, shared: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.yaml"
    path.write_text(yaml.safe_dump({"extends": "local", "storage": {"shared_directory": shared,
                                                                    "keep_task_files": True}}))
    return path


def _task_directory(out: Path) -> Path:
    return Path(json.loads(out.with_name(out.stem + ".report.json").read_text())["task_directory"])


def test_a_relative_shared_directory_in_a_profile_is_below_the_profiles_folder(work, tmp_path):
    profile = _profile(tmp_path / "profiles", "tasks/here")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "faults.epc"
    run_resqmp("launch", "--profile", profile, "--batch", work / "batch.yaml", "--output", out,
               cwd=elsewhere, check=0)
    assert _task_directory(out).parent == tmp_path / "profiles" / "tasks" / "here"
    assert not any(elsewhere.iterdir())
    shown = run_resqmp("profiles", "show", profile, cwd=elsewhere, check=0).stdout
    assert str(tmp_path / "profiles" / "tasks" / "here") in shown


def test_a_relative_shared_directory_on_the_command_line_is_below_the_current_folder(work, tmp_path):
    profile = _profile(tmp_path / "profiles", "tasks/here")
    here = tmp_path / "here"
    here.mkdir()
    out = tmp_path / "faults.epc"
    run_resqmp("launch", "--profile", profile, "--set", "storage.shared_directory=cli-tasks",
               "--batch", work / "batch.yaml", "--output", out, cwd=here, check=0)
    assert _task_directory(out).parent == here / "cli-tasks"


def test_a_shared_directory_that_expands_to_a_relative_path_is_refused(work, tmp_path):
    profile = _profile(tmp_path / "profiles", "${RESQMP_TEST_SCRATCH}/tasks")
    proc = run_resqmp("launch", "--profile", profile, "--batch", work / "batch.yaml",
                      "--output", tmp_path / "faults.epc", env={"RESQMP_TEST_SCRATCH": "scratch"}, cwd=tmp_path)
    assert_one_line_error(proc, ExitCode.PROFILE, "storage.shared_directory", "scratch/tasks", "relative")
    assert "cluster up" not in proc.stderr and not (tmp_path / "scratch").exists()
