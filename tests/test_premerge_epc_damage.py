"""A group partial whose EPC is damaged (cut short, not a zip, a member whose bytes fail their
CRC, a member that is not XML, a part its manifest names missing) costs its own group only: the
launcher merges that group's tasks from their own files, with one warning naming the partial, and
the model is resqpy's. A damaged member used to be dropped while loading the partial ("okay to
continue?"), so a task's part went missing from OUT in a run that exited 0 (and its own files,
the only good copy, were then removed); a partial cut short stopped the run with an internal
error (exit 1), and every resume again, the journal naming the same partial."""
from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path

import pytest

from test_premerge import batches, recombined, reference  # noqa: F401 - batches is a fixture
from test_premerge_h5 import no_proc_paths, only_from_partial, two_groups
from test_premerge_safe import warned
from test_recombine import assert_identical


def _rewritten(epc: Path, change) -> None:
    """The partial's zip written again with change(name, bytes) -> bytes or None (left out)."""
    with zipfile.ZipFile(epc) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for info, data in members:
            data = change(info.filename, data)
            if data is not None:
                z.writestr(info, data)
    epc.write_bytes(buf.getvalue())


def _a_part(epc: Path, kind: str = "GridConnectionSet") -> str:
    with zipfile.ZipFile(epc) as z:
        return next(n for n in z.namelist() if kind in n and not n.startswith("_rels"))


def damage(epc: Path, how: str) -> None:
    if how == "truncated":                  # a lagging filesystem that shows the file before all of it
        os.truncate(epc, epc.stat().st_size // 2)
    elif how == "not_zip":
        epc.write_bytes(b"not an EPC")
    elif how == "bit_flipped":              # a disk or a copy that failed: the member's CRC no longer matches
        data = bytearray(epc.read_bytes())
        with zipfile.ZipFile(epc) as z:
            info = z.getinfo(_a_part(epc))
        data[info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 200] ^= 0x20
        epc.write_bytes(bytes(data))
    elif how == "not_xml":                  # a whole, CRC-correct zip whose member does not parse
        name = _a_part(epc)
        _rewritten(epc, lambda n, data: b"<not xml" if n == name else data)
    else:                                   # "part_missing": a part the manifest names is not in the zip
        name = _a_part(epc)
        _rewritten(epc, lambda n, data: None if n == name else data)


@pytest.mark.parametrize("how", ["truncated", "not_zip", "bit_flipped", "not_xml", "part_missing"])
def test_a_damaged_partial_epc_costs_its_own_group_only(batches, tmp_path, caplog, how):
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    first, second = two_groups(batches, run_dir)
    records = first + second
    ref = reference(records, tmp_path)
    only_from_partial(second)              # the second group can only come from its partial
    damage(Path(first[0]["partial"]), how)
    with caplog.at_level(logging.WARNING, logger="resqmp"):
        out = recombined(records, tmp_path)
    assert_identical(out, ref)
    assert warned(caplog, first[0]["partial"])
    assert not any(second[0]["partial"] in r.getMessage() for r in caplog.records)
    assert no_proc_paths(caplog)


def test_resume_with_a_partials_epc_cut_short_finishes(slow, tmp_path):
    """`resqmp launch` in groups of 4 with partials, SIGKILLed once a group is journaled; the
    journaled partial's EPC is then cut short. The same command resumes, merges those tasks from
    their own files and gives resqpy's model (it used to exit 1, and again on every resume)."""
    from epc_compare import content
    from proc_watch import launch_killed_once_journaled, start_launch
    out = tmp_path / "faults.epc"
    args = ("--workers", "2", "--set", "tasks.group_size=4", "--set", "tasks.premerge=true")
    records = launch_killed_once_journaled(slow["batch"], out, *args, records=4, what="a first group's results")
    partials = {r["partial"] for r in records if r.get("partial")}
    assert partials
    for partial in partials:
        damage(Path(partial), "truncated")
    proc2 = start_launch(slow["batch"], out, *args)
    stdout, stderr = proc2.communicate(timeout=300)
    assert proc2.returncode == 0, stderr
    assert "internal error" not in stderr
    assert content(out) == slow["reference"]
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["succeeded"] == 8
