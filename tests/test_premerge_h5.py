"""A group partial whose EPC and manifest are there but whose HDF5 file cannot serve the merge (gone,
not yet visible on a lagging shared filesystem, not an HDF5 file, a dataset missing) is a shortcut
lost, not a failed run: the launcher merges that group's tasks from their own files, with one
warning naming the partial, and the model is still resqpy's. It used to stop the run with an
internal error (exit 1) naming a /proc/self/fd path, on every resume again (the journal names the
same partial), or to stop half-way through a task's share with a dataset missing.

Scope: an HDF5 file that did not appear within recombine.APPEAR_SECONDS is treated as a partial
that did not appear (no partial is read from then on: one wait per run, not one per group); one
that is there but unusable costs its own group only."""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import h5py
import pytest

import resqmp.recombine as recombine
from resqmp.execute import run_group
from resqmp.outputs import h5_of
from test_premerge import FIND_FACES, batches, recombined, reference  # noqa: F401 - batches is a fixture
from test_premerge_safe import warned
from test_recombine import assert_identical


def two_groups(batches, run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Tasks 0-3 and 4-7 run as two groups with premerge, as two workers would run them."""
    _, tasks = batches["find_faces"]
    items = list(enumerate(tasks[:8]))
    return (run_group(FIND_FACES, items[:4], str(run_dir), premerge=True),
            run_group(FIND_FACES, items[4:], str(run_dir), premerge=True))


def datasets(h5: Path) -> list[str]:
    found = []
    with h5py.File(h5, "r") as f:
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def only_from_partial(records: list[dict]) -> None:
    """The tasks' own EPCs removed: their share can then come from their group's partial only."""
    for r in records:
        os.unlink(r["epc_file"])


def unreadable(partial: str) -> None:
    """A partial's EPC that stops the run if the launcher ever reads it."""
    Path(partial).write_bytes(b"not an EPC: merging it would fail the run")


def no_proc_paths(caplog) -> bool:
    return not any("/proc/" in r.getMessage() for r in caplog.records)


def test_an_h5_that_never_appears_falls_back_for_this_group_and_every_later_one(batches, tmp_path, caplog,
                                                                               monkeypatch):
    monkeypatch.setattr(recombine, "APPEAR_SECONDS", 0.5)      # how long a lagging filesystem gets
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    first, second = two_groups(batches, run_dir)
    records = first + second
    ref = reference(records, tmp_path)
    h5_of(Path(first[0]["partial"])).unlink()
    unreadable(second[0]["partial"])       # no partial is read once one did not appear: one wait per run
    with caplog.at_level(logging.WARNING, logger="resqmp"):
        out = recombined(records, tmp_path)
    assert_identical(out, ref)
    assert warned(caplog, first[0]["partial"], "did not appear")
    assert not any(second[0]["partial"] in r.getMessage() for r in caplog.records)    # never opened
    assert no_proc_paths(caplog)


def test_an_h5_that_appears_late_is_waited_for_and_its_partial_used(batches, tmp_path, monkeypatch):
    """A shared filesystem that shows the partial's EPC before its HDF5 file: waited for as the EPC
    is (APPEAR_SECONDS), then the partial is merged (the tasks' own EPCs are gone: nothing else
    could give the model)."""
    monkeypatch.setattr(recombine, "APPEAR_SECONDS", 120.0)
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = two_groups(batches, run_dir)[0]
    ref = reference(records, tmp_path)
    only_from_partial(records)
    h5 = h5_of(Path(records[0]["partial"]))
    hidden = tmp_path / "hidden.h5"
    os.rename(h5, hidden)
    shown = threading.Timer(1.0, os.rename, (hidden, h5))
    shown.start()
    try:
        out = recombined(records, tmp_path)
    finally:
        shown.cancel()
        shown.join()
    assert_identical(out, ref)


@pytest.mark.parametrize("damage", ["not_hdf5", "truncated", "dataset_missing", "link"])
def test_an_unusable_h5_costs_its_own_group_only(batches, tmp_path, caplog, damage):
    """The HDF5 file is there but cannot give every array the partial's parts name: the group's
    tasks are merged from their own files before anything of the partial is copied (never half a
    share: the model is resqpy's), and the next group still comes from its partial (its tasks'
    own EPCs are gone)."""
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    first, second = two_groups(batches, run_dir)
    records = first + second
    ref = reference(records, tmp_path)
    only_from_partial(second)
    h5 = h5_of(Path(first[0]["partial"]))
    if damage == "not_hdf5":
        h5.write_bytes(b"not an HDF5 file")
    elif damage == "truncated":          # a lagging filesystem that shows the file before all of it
        os.truncate(h5, h5.stat().st_size // 2)
    elif damage == "dataset_missing":    # the last task's last array: the share before it is whole
        with h5py.File(h5, "a") as f:
            del f[datasets(h5)[-1]]
    else:
        os.rename(h5, tmp_path / "elsewhere.h5")
        os.symlink(tmp_path / "elsewhere.h5", h5)
    with caplog.at_level(logging.WARNING, logger="resqmp"):
        out = recombined(records, tmp_path)
    assert_identical(out, ref)
    assert warned(caplog, first[0]["partial"])
    assert not any(second[0]["partial"] in r.getMessage() for r in caplog.records)
    assert no_proc_paths(caplog)


def test_resume_with_a_partials_h5_damaged_finishes(slow, tmp_path):
    """`resqmp launch` in groups of 4 with partials, SIGKILLed once a group is journaled; the
    partial's HDF5 file is then cut short (a copy, a filesystem, a disk that failed). The same
    command resumes, merges the journaled tasks from their own files, and gives resqpy's model; it
    used to exit 1 with an internal error, and again on every resume."""
    from epc_compare import content
    from proc_watch import launch_killed_once_journaled, start_launch
    out = tmp_path / "faults.epc"
    args = ("--workers", "2", "--set", "tasks.group_size=4", "--set", "tasks.premerge=true")
    records = launch_killed_once_journaled(slow["batch"], out, *args, records=4, what="a first group's results")
    partials = {r["partial"] for r in records if r.get("partial")}
    assert partials
    for partial in partials:
        h5 = h5_of(Path(partial))
        os.truncate(h5, h5.stat().st_size // 2)
    proc2 = start_launch(slow["batch"], out, *args)
    stdout, stderr = proc2.communicate(timeout=300)
    assert proc2.returncode == 0, stderr
    assert content(out) == slow["reference"]
    assert "internal error" not in stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["succeeded"] == 8
