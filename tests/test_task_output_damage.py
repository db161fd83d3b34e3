"""A task whose own output EPC the launcher cannot merge whole (cut short, a member whose bytes
fail their CRC, never shown by the filesystem) is left out of the model and counted failed: never
merged in part, never without one of its parts. It used to lose a part silently (resqpy's load
drops a member it cannot read, "okay to continue?", and the run exited 0, then removed the task's
files), or to stop the run with an internal error (exit 1), and every resume again, the journal
naming the same file. A resume that finds a journaled task's output so runs the task again in that
run instead (test_resume_damaged)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import resqmp.recombine as recombine
from resqmp.errors import ExitCode
from resqmp.recombine import Recombiner
from test_premerge import batches, reference  # noqa: F401 - batches is a fixture
from test_premerge_epc_damage import damage
from test_premerge_h5 import two_groups
from test_recombine import assert_identical


def _recombined(records, folder: Path) -> tuple[Path, dict]:
    out = folder / "out" / "out.epc"
    out.parent.mkdir()
    recombiner = Recombiner(out)
    for r in records:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"])
    damaged = recombiner.take_damaged()
    recombiner.publish()
    return out, damaged


def own_file_records(batches, tmp_path, monkeypatch) -> list[dict]:
    """The eight find-faces tasks' records (two groups, run under tmp_path/tasks), each naming its
    own files only (no partial); a file that does not show is given up on after 0.5 s."""
    monkeypatch.setattr(recombine, "APPEAR_SECONDS", 0.5)
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = [r for group in two_groups(batches, run_dir) for r in group]
    for r in records:
        r.pop("partial", None)                  # the tasks' own files only
    return records


@pytest.mark.parametrize("how", ["truncated", "bit_flipped", "not_xml", "gone"])
def test_a_damaged_task_output_is_left_out_whole_and_named(batches, tmp_path, caplog, monkeypatch, how):
    records = own_file_records(batches, tmp_path, monkeypatch)
    ref = reference([r for r in records if r["index"] != 2], tmp_path)
    victim = Path(records[2]["epc_file"])
    if how == "gone":
        victim.unlink()
    else:
        damage(victim, how)
    with caplog.at_level(logging.WARNING, logger="resqmp"):
        out, damaged = _recombined(records, tmp_path)
    assert list(damaged) == [2] and str(victim) in damaged[2]
    assert_identical(out, ref)                  # resqpy's model of the other tasks: nothing of task 2
    assert not any("okay to continue" in r.getMessage() for r in caplog.records)


def test_resume_with_a_task_output_damaged_reruns_it(slow, tmp_path):
    """`resqmp launch`, SIGKILLed once tasks are journaled; one journaled task's EPC then has a
    bit flipped. The same command runs that task again with the others left to run, in that one
    run (test_resume_damaged), and gives resqpy's model (exit 0). It used to count the task failed
    (exit 3) and leave it to a third run."""
    from epc_compare import content
    from proc_watch import launch_killed_once_journaled, start_launch
    out = tmp_path / "faults.epc"
    args = ("--workers", "2", "--set", "tasks.group_size=1", "--set", "tasks.premerge=false")
    records = launch_killed_once_journaled(slow["batch"], out, *args, records=2, what="two tasks' results")
    victim = next(r for r in records if r["success"])
    damage(Path(victim["epc_file"]), "bit_flipped")
    proc2 = start_launch(slow["batch"], out, *args)
    stdout, stderr = proc2.communicate(timeout=300)
    assert proc2.returncode == 0, stderr
    assert "internal error" not in stderr and "Traceback" not in stderr
    assert f"task {victim['index']}" in stderr and "runs again in this run" in stderr
    assert content(out) == slow["reference"]
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["succeeded"] == 8
    journaled = {r["index"] for r in records if r["success"]}
    assert [t["index"] for t in report["tasks"] if not t["resumed"]] == sorted(set(range(8)) - journaled
                                                                             | {victim["index"]})


def test_members_resqpy_skips_are_no_damage(batches, tmp_path):
    """An EPC zipped by another tool than resqpy's writer (folder entries such as `_rels/`, as
    `zip -r` adds) and with a docProps member that is not XML: resqpy's load skips those and
    merges the task; so does the launcher (nothing of the task's output is lost)."""
    import zipfile
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = [r for group in two_groups(batches, run_dir) for r in group]
    for r in records:
        r.pop("partial", None)
    epc = Path(records[2]["epc_file"])
    tmp = epc.with_suffix(".tmp")
    with zipfile.ZipFile(epc) as z, zipfile.ZipFile(tmp, "w") as o:
        o.writestr(zipfile.ZipInfo("_rels/"), b"")
        for info in z.infolist():
            o.writestr(info, b"not xml" if info.filename.startswith("docProps") else z.read(info))
    os.replace(tmp, epc)
    ref = reference(records, tmp_path)
    out, damaged = _recombined(records, tmp_path)
    assert damaged == {}
    assert_identical(out, ref)
