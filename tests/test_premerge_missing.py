"""A group partial that is not there when the launcher comes to it (removed, its folder renamed
away by someone who may write in the task directory, never visible on a lagging filesystem) is
only a shortcut lost: the launcher waits as for any worker's file, then merges the tasks' own
files, says so once by the partial's own name, and reads no partial after that. It used to fail
the whole run with an internal error naming a /proc/self/fd path."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

import resqmp.recombine as recombine
from test_premerge import batches, recombined, reference  # noqa: F401 - batches is a fixture
from test_premerge_safe import four_tasks, warned
from test_recombine import assert_identical


@pytest.mark.parametrize("gone", ["epc", "folder"])
def test_a_partial_gone_before_its_merge_falls_back_to_the_tasks_files(batches, tmp_path, caplog, monkeypatch, gone):
    monkeypatch.setattr(recombine, "APPEAR_SECONDS", 0.5)      # how long a lagging filesystem gets
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = four_tasks(batches, run_dir)
    partial = Path(records[0]["partial"])
    assert partial.exists()
    if gone == "epc":
        partial.unlink()
    else:
        partial.parent.rename(run_dir / "elsewhere")       # needs no write permission on groups/ itself
    with caplog.at_level(logging.WARNING, logger="resqmp"):
        out = recombined(records, tmp_path)
    assert_identical(out, reference(records, tmp_path))
    assert warned(caplog, str(partial), "did not appear")
    assert not any("/proc/" in r.getMessage() for r in caplog.records)
