"""`resqmp profiles check` leaves the shared directory as it found it: the folders it had to
create for the check are gone afterwards, folders that were there before stay."""
from __future__ import annotations

from conftest import run_resqmp


def test_the_folders_the_check_created_are_removed(tmp_path):
    shared = tmp_path / "site" / "scratch" / "resqmp"
    proc = run_resqmp("profiles", "check", "local", "--set", f"storage.shared_directory={shared}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_folder_that_was_there_before_stays(tmp_path):
    default = tmp_path / ".resqmp-tasks"          # the default shared directory, beside the current folder
    default.mkdir()
    proc = run_resqmp("profiles", "check", "local", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == [".resqmp-tasks"] and list(default.iterdir()) == []
