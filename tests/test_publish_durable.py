"""A published model survives a crash of the node right after the launch (power lost, kernel
panic): the new EPC and .h5 reach the disk before the renames that put them at OUT, and those
renames reach it before the model they replace is removed. Without that, a crash after the
publish could leave OUT's names on files the filesystem never wrote out (zero length after a
journal replay), the model that was there already deleted: less than the user had.

The order of the real system calls of a real publish is recorded (a Python audit hook for renames
and removals, os.fsync wrapped to note which file or folder each call reached, then called)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from test_recombine import assert_identical, outputs, resqmp_recombine, resqpy_recombine  # noqa: F401 - fixture

_EVENTS: list[tuple[str, str]] = []
_RECORDING = [False]


def _hook(event, args):
    if _RECORDING[0] and event in ("os.rename", "shutil.rmtree"):
        _EVENTS.append((event, os.fspath(args[0]) if event == "shutil.rmtree" else os.fspath(args[1])))


sys.addaudithook(_hook)         # for the whole session: it records only while a test asks


@pytest.fixture
def calls(monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        _EVENTS.append(("os.fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    _EVENTS.clear()
    _RECORDING[0] = True
    yield _EVENTS
    _RECORDING[0] = False


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_the_new_model_is_on_disk_before_its_names_and_its_names_before_the_old_one_goes(
        outputs, tmp_path, calls, existing):
    results = outputs["find_faces"]
    out = tmp_path / "out.epc"
    if existing:
        resqmp_recombine(results[:2], out)         # a good earlier model at OUT
    calls.clear()
    resqmp_recombine(results, out, update_existing=existing)
    events = list(calls)
    renames = [i for i, (e, path) in enumerate(events) if e == "os.rename" and Path(path).parent == tmp_path]
    assert [Path(events[i][1]).name for i in renames] == ["out.h5", "out.epc"]
    synced = {path: i for i, (e, path) in enumerate(events) if e == "os.fsync"}
    staged = {Path(p).name: i for p, i in synced.items() if ".staging-" in p}
    # the staged EPC and .h5, each synced before the first rename into OUT's folder
    assert staged.get("out.epc", len(events)) < renames[0], events
    assert staged.get("out.h5", len(events)) < renames[0], events
    # OUT's folder synced after the last rename into it, before the staging folder (and the model
    # the publish replaced, in its replaced/) is removed
    folder_synced = [i for i, (e, path) in enumerate(events) if e == "os.fsync" and Path(path) == tmp_path]
    removed = [i for i, (e, path) in enumerate(events) if e == "shutil.rmtree" and ".staging-" in path]
    assert folder_synced and removed, events
    assert renames[-1] < folder_synced[-1] < removed[0], events
    # and the model is the one resqpy makes
    ref = tmp_path / "ref" / "out.epc"
    ref.parent.mkdir()
    if existing:
        resqpy_recombine(results[:2], ref)
    resqpy_recombine(results, ref)
    assert_identical(out, ref)
