"""A hostile and a careless user against the trust promises (issue 9; issue 12 part 3): each test
here failed on main before its fix. Real launches, real files, real job scripts."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_resqmp
from resqmp.errors import ExitCode
from test_bad_inputs import assert_one_line_error


@pytest.fixture
def work(example, tmp_path):
    """A private copy of the example model and its batches."""
    dst = tmp_path / "ex"
    shutil.copytree(example["epc"].parent, dst)
    return dst


def launch(batch, out, *extra, **kwargs):
    return run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, *extra, **kwargs)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused_before_work(proc, code, *fragments):
    assert "cluster up" not in proc.stderr, proc.stderr
    return assert_one_line_error(proc, code, *fragments)


# -- the journal is written in place: never through a link onto another file ---------------------

def _symlinked(journal: Path, precious: Path) -> None:
    journal.symlink_to(precious)


def _hard_linked(journal: Path, precious: Path) -> None:
    os.link(precious, journal)


@pytest.mark.parametrize("fresh", [False, True], ids=["resume", "fresh"])
@pytest.mark.parametrize("link", [_symlinked, _hard_linked], ids=["symlink", "hard-link"])
def test_a_journal_name_linked_to_another_file_never_writes_into_it(work, tmp_path, link, fresh):
    """OUT.journal.jsonl planted as a link to a file that is no input of the batch (another model,
    elsewhere): the journal is appended and truncated in place, so opening it through the link
    truncated that model (its bytes after the last newline; with --fresh all of it)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = elsewhere / "precious.epc"
    shutil.copy(work / "model.epc", precious)
    before = sha(precious)
    journal = work / "faults.journal.jsonl"
    link(journal, precious)
    proc = launch(work / "batch.yaml", work / "faults.epc", *(["--fresh"] if fresh else []))
    line = refused_before_work(proc, ExitCode.OUTPUT, str(journal))
    assert ("symbolic link" if link is _symlinked else "hard link") in line.replace(str(tmp_path), "")
    assert sha(precious) == before
    assert not (work / "faults.epc").exists()
