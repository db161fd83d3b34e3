"""Group partials on a shared filesystem: the run's task directory is often a group-writable project
folder, so whoever else can write there must not be able to choose where a worker writes its group
partial, nor make it write through a link into one of the user's files, nor hand the launcher a
partial of their own to merge into the user's output. When the partials' folder (run_dir/groups)
cannot be known to be the user's alone, no partial is written or read: the launcher merges the
tasks' own files, and the model is still resqpy's, to the byte."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest

from resqmp.execute import run_group
from resqmp.premerge import FOLDER, _write, manifest_of
from resqmp.outputs import h5_of
from test_premerge import FIND_FACES, batches, recombined, reference  # noqa: F401 - batches is a fixture
from test_recombine import assert_identical


def four_tasks(batches, run_dir: Path) -> list[dict]:
    """Four find-faces tasks run as one group on a worker would run them, with premerge."""
    _, tasks = batches["find_faces"]
    return run_group(FIND_FACES, list(enumerate(tasks[:4])), str(run_dir), premerge=True)


def warned_record(record, *words) -> bool:
    return record.levelno >= logging.WARNING and all(w in record.getMessage() for w in words)


def warned(caplog, *words) -> bool:
    return any(warned_record(r, *words) for r in caplog.records)


def test_a_symlink_planted_at_groups_gets_no_partial(batches, tmp_path, caplog):
    """run_dir/groups -> a folder someone else controls: nothing lands there, no record names a
    partial, a warning says why, and the launcher merges the tasks' own files."""
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    os.symlink(elsewhere, run_dir / FOLDER)
    with caplog.at_level(logging.WARNING, logger="resqmp.premerge"):
        records = four_tasks(batches, run_dir)
    assert all(r["success"] for r in records)
    assert list(elsewhere.iterdir()) == []
    assert [r.get("partial") for r in records] == [None] * 4
    assert warned(caplog, str(run_dir / FOLDER), "symbolic link")
    assert_identical(recombined(records, tmp_path), reference(records, tmp_path))


@pytest.mark.parametrize("mode", [0o770, 0o757, 0o1777])
def test_a_groups_folder_others_can_write_gets_no_partial(batches, tmp_path, caplog, mode):
    """A groups/ folder already there that the group or anyone may write in (sticky or not:
    another user could still create the partial's names before the worker does)."""
    run_dir = tmp_path / "tasks"
    (run_dir / FOLDER).mkdir(parents=True)
    os.chmod(run_dir / FOLDER, mode)
    with caplog.at_level(logging.WARNING, logger="resqmp.premerge"):
        records = four_tasks(batches, run_dir)
    assert list((run_dir / FOLDER).iterdir()) == []
    assert [r.get("partial") for r in records] == [None] * 4
    assert warned(caplog, str(run_dir / FOLDER), "writable")
    assert_identical(recombined(records, tmp_path), reference(records, tmp_path))


def test_groups_is_made_private_to_the_user(batches, tmp_path):
    run_dir = tmp_path / "tasks"
    run_dir.mkdir(mode=0o777)
    os.chmod(run_dir, 0o777)           # a group-writable project folder, or worse
    records = four_tasks(batches, run_dir)
    st = os.lstat(run_dir / FOLDER)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    assert Path(records[0]["partial"]).parent == run_dir / FOLDER
    assert_identical(recombined(records, tmp_path), reference(records, tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another uid needs root")
def test_a_groups_folder_of_another_uid_gets_no_partial(batches, tmp_path, caplog):
    run_dir = tmp_path / "tasks"
    (run_dir / FOLDER).mkdir(parents=True, mode=0o700)
    os.chown(run_dir / FOLDER, 54321, 54321)
    with caplog.at_level(logging.WARNING, logger="resqmp.premerge"):
        records = four_tasks(batches, run_dir)
    assert list((run_dir / FOLDER).iterdir()) == []
    assert [r.get("partial") for r in records] == [None] * 4
    assert warned(caplog, str(run_dir / FOLDER), "54321")
    assert_identical(recombined(records, tmp_path), reference(records, tmp_path))


def test_a_symlink_planted_at_the_manifests_temporary_name_is_never_followed(batches, tmp_path):
    """Someone who saw the partial's .h5 appear plants `<name>.json.tmp` -> one of the user's files:
    the manifest is written into a file created exclusively, never through that link."""
    run_dir = tmp_path / "tasks"
    (run_dir / FOLDER).mkdir(parents=True, mode=0o700)
    _, tasks = batches["find_faces"]
    shares = run_group(FIND_FACES, list(enumerate(tasks[:4])), str(run_dir))
    epc = run_dir / FOLDER / "g0000000-0000003-0123456789ab.epc"
    victim = tmp_path / "victim.dat"
    victim.write_bytes(b"the user's data")
    tmp = manifest_of(epc).with_suffix(".json.tmp")
    os.symlink(victim, tmp)
    with contextlib.suppress(OSError):
        _write(shares, epc)
    assert victim.read_bytes() == b"the user's data"
    assert os.path.islink(tmp) and os.readlink(tmp) == str(victim)


def _copy_partial(partial: str, to: Path) -> Path:
    """The partial's three files copied into `to`, the EPC replaced by bytes that fail to load:
    merged, it would stop the run."""
    to.mkdir(exist_ok=True)
    for path in (Path(partial), h5_of(Path(partial)), manifest_of(partial)):
        shutil.copy2(path, to / path.name)
    (to / Path(partial).name).write_bytes(b"not an EPC: reading it would fail the merge")
    return to / Path(partial).name


@pytest.mark.parametrize("where", ["outside", "run_dir", "dotdot"])
def test_a_record_naming_a_partial_outside_groups_is_not_read(batches, tmp_path, where):
    """The launcher reads a partial only in this run's run_dir/groups; a record naming any other
    file (a worker's record is data, not a path to trust) merges the task's own file."""
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = four_tasks(batches, run_dir)
    folder = {"outside": tmp_path / "outside", "run_dir": run_dir, "dotdot": tmp_path / "outside"}[where]
    planted = _copy_partial(records[0]["partial"], folder)
    named = str(run_dir / FOLDER / ".." / ".." / "outside" / planted.name) if where == "dotdot" else str(planted)
    for r in records:
        r["partial"] = named
    assert_identical(recombined(records, tmp_path), reference(records, tmp_path))


def test_groups_replaced_by_a_symlink_after_the_worker_wrote_is_not_read(batches, tmp_path, caplog):
    """Between the worker's write and the launcher's read, groups/ is moved away and a symlink to
    a folder holding a planted partial of the same name put in its place: not read."""
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = four_tasks(batches, run_dir)
    planted = tmp_path / "planted"
    _copy_partial(records[0]["partial"], planted)
    os.rename(run_dir / FOLDER, tmp_path / "moved")
    os.symlink(planted, run_dir / FOLDER)
    with caplog.at_level(logging.WARNING, logger="resqmp.premerge"):
        out = recombined(records, tmp_path)
    assert_identical(out, reference(records, tmp_path))
    assert warned(caplog, str(run_dir / FOLDER))


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another uid needs root")
def test_partials_of_workers_running_as_another_uid_are_not_read(batches, tmp_path, caplog):
    """Workers on Kubernetes may run as another uid than the launcher: their private groups/ is
    not this launcher's to read (without root it could not even look inside). The launcher merges
    the tasks' own files, with a warning, at once (no waiting for files it cannot see)."""
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = four_tasks(batches, run_dir)
    for path in [run_dir / FOLDER, *(run_dir / FOLDER).iterdir()]:
        os.chown(path, 54321, 54321)
    with caplog.at_level(logging.WARNING, logger="resqmp.premerge"):
        out = recombined(records, tmp_path)
    assert_identical(out, reference(records, tmp_path))
    assert warned(caplog, str(run_dir / FOLDER), "54321")


def test_a_partial_in_the_private_groups_folder_is_read(batches, tmp_path):
    """The checks keep the optimisation: with the tasks' own EPCs gone, the model still comes out
    of the partial, resqpy's."""
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = four_tasks(batches, run_dir)
    ref = reference(records, tmp_path)
    for r in records:
        os.unlink(r["epc_file"])
    assert_identical(recombined(records, tmp_path), ref)


def test_a_folder_refused_is_said_once_per_worker_not_once_per_group(batches, tmp_path, caplog):
    """A thousand groups on a worker whose groups/ others can write: one warning, not a thousand."""
    run_dir = tmp_path / "tasks"
    (run_dir / FOLDER).mkdir(parents=True)
    os.chmod(run_dir / FOLDER, 0o777)
    with caplog.at_level(logging.WARNING, logger="resqmp.premerge"):
        first = four_tasks(batches, run_dir)
        second = four_tasks(batches, run_dir)
    assert [r.get("partial") for r in first + second] == [None] * 8
    assert sum(warned_record(r, str(run_dir / FOLDER), "writable") for r in caplog.records) == 1
