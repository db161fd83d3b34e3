"""A task's part copied unchanged takes the bytes its EPC stored instead of being serialised again
(resqmp.merge: merge_model's `stored`). That holds only where serialising the parsed tree gives
those bytes back; a part whose XML does not round-trip (a CR in a text: the parser turns it into
LF) must still come out as resqpy's recombination writes it.

Task files are written here with resqpy; the reference is resqpy's own recombination loop on the
same files, compared to the byte (tests/test_recombine.py).
"""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

import resqpy.crs as rqc
import resqpy.model as rq
import resqpy.surface as rqs

from test_recombine import assert_identical, resqmp_recombine, resqpy_recombine


def _task(folder, index: int, title: str) -> dict:
    """One task's output: a CRS and a point set titled `title`, in an EPC of its own."""
    folder.mkdir(parents=True)
    epc = str(folder / "task.epc")
    model = rq.new_model(epc, quiet=True)
    crs = rqc.Crs(model, title="crs")
    crs.create_xml()
    points = np.array([[0.0, 0.0, 1000.0 + index], [10.0, 0.0, 1000.0], [0.0, 10.0, 1001.0]])
    pset = rqs.PointSet(model, points_array=points, crs_uuid=crs.uuid, title=title)
    pset.write_hdf5()
    pset.create_xml()
    model.store_epc(quiet=True)
    model.h5_release()
    return {"index": index, "epc_file": epc, "uuid_list": [str(crs.uuid), str(pset.uuid)]}


@pytest.mark.parametrize("title", ["plain title", "line one\r\nline two", "lone\rreturn", "R&D <fault> A"])
def test_part_as_resqpy_writes_it(tmp_path, title):
    results = [_task(tmp_path / f"t{i}", i, f"{title} {i}" if i else title) for i in range(3)]
    with zipfile.ZipFile(results[0]["epc_file"]) as z:
        stored = b"".join(z.read(n) for n in z.namelist() if "PointSet" in n and not n.startswith("_rels"))
    if "\r" in title:      # the case this test is about: what the task stored is not what resqpy writes
        assert b"\r" in stored
    ours, theirs = tmp_path / "ours.epc", tmp_path / "theirs.epc"
    resqmp_recombine(results, ours)
    resqpy_recombine(results, theirs)
    assert_identical(ours, theirs)
    with zipfile.ZipFile(ours) as z:
        assert not any(b"\r" in z.read(n) for n in z.namelist())
