"""A wrapper that reports success with an output EPC but a uuid_list that is no list of uuids
(None, one uuid as a string, bytes, a number) fails that task only, with one line that names the
task and what it returned; the other tasks are merged, resqpy's model of them byte for byte.

resqpy's function_multiprocessing raises on such a task (sort_uuids_list iterates the uuid_list:
TypeError for None or a number; a string's characters are no uuids) and writes nothing, so there
is no resqpy content to match for it. resqmp used to record None as an empty list: the task was
counted a success with nothing of its output merged, its fault silently missing from the model
(the drop-in returned True for it); a string was taken character by character ("its uuid_list
names '3'")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_resqmp
from resqmp.errors import ExitCode
from test_bad_uuid_list import GROUPS, example_batch
from test_premerge import reference
from test_recombine import assert_identical
from test_reliability import journal_records
from wrappers_for_tests import MALFORMED_UUID_LISTS

BAD = 1


def _batch(example: dict, shape: str) -> Path:
    return example_batch(example, "malformed_uuid_list_find_faces", f"malformed-{shape}", bad_index=BAD, shape=shape)


@pytest.mark.parametrize("premerge", [False, True], ids=["own-files", "group-partial"])
@pytest.mark.parametrize("shape", ["none", "one_string"])
def test_a_task_whose_uuid_list_is_no_list_fails_alone(example, tmp_path, shape, premerge):
    out = tmp_path / "faults.epc"
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", _batch(example, shape),
                      "--output", out, *GROUPS[premerge])
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    kind = "NoneType" if shape == "none" else "str"
    (line,) = [ln for ln in proc.stderr.splitlines() if "uuid_list" in ln]
    assert line.startswith(f"resqmp: task {BAD} (fault 2) FAILED: ") and f"a {kind}" in line, line

    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["failed"] == 1 and report["totals"]["succeeded"] == 3
    (bad,) = [t for t in report["tasks"] if not t["success"]]
    assert bad["index"] == BAD and "uuid_list" in bad["error"]

    # the model is resqpy's of the other three tasks' own files, byte for byte; the run can be resumed
    last = {r["index"]: r for r in journal_records(out)}
    assert sorted(last) == [0, 1, 2, 3] and not last[BAD]["success"]
    good = [last[i] for i in sorted(last) if i != BAD]
    assert all(r["success"] and Path(r["epc_file"]).is_file() for r in good)
    assert_identical(out, reference(good, tmp_path))


@pytest.mark.parametrize("shape", sorted(MALFORMED_UUID_LISTS))
def test_the_drop_in_returns_false_for_that_task_where_resqpy_raises(example, tmp_path, shape):
    import resqpy.multi_processing as rqmp

    import resqmp
    from resqmp.batch import load
    from wrappers_for_tests import malformed_uuid_list_find_faces
    tasks = [{**k, "bad_index": BAD, "shape": shape} for k in load(example["batch"]).tasks]
    with pytest.raises((TypeError, ValueError, AttributeError)):       # resqpy's own, for the record
        rqmp.function_multiprocessing(malformed_uuid_list_find_faces, tasks, str(tmp_path / "resqpy.epc"), None,
                                      tmp_dir_path=str(tmp_path))
    success = resqmp.function_multiprocessing(malformed_uuid_list_find_faces, tasks, tmp_path / "ours.epc",
                                              cluster=None, tmp_dir_path=tmp_path)
    assert success == [i != BAD for i in range(len(tasks))]
    assert "uuid_list" in str(success.errors[BAD])
