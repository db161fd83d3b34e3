"""A wrapper whose returned uuid_list names something that is no part of its own output EPC (a
stale uuid, a string that is not a uuid, a non-string) fails that task only: one warning line
names the task and the culprit, the other tasks are merged (resqpy's model of them, byte for
byte), and `resqmp launch` exits TASKS_FAILED with its journal kept for a resume.

resqpy's own function_multiprocessing cannot recombine such a task: sort_uuids_list orders the
uuids by the type of part_for_uuid(u), which is None for an absent uuid (AttributeError on
None.endswith) and raises ValueError for a string that is not a uuid; the whole recombination
raises, nothing written. So there is no resqpy content to match for that task: it is left out
whole, as a task whose output is damaged (resqmp.recombine.DamagedOutput). It used to end the
launch with an internal error (exit 1, a traceback) and nothing published, on every resume again;
and with tasks.premerge the worker's partial of the whole group was lost (the same error in the
worker's sort), not only the bad task's share.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_resqmp
from resqmp.errors import ExitCode
from resqmp.tasks import uuid_text
from test_premerge import reference
from test_recombine import assert_identical
from test_reliability import journal_records
from wrappers_for_tests import BOGUS_UUIDS

#: the task whose uuid_list names the bogus entry: in the first group of three (tasks 0-2)
BAD = 1


def example_batch(example: dict, wrapper: str, name: str, **defaults) -> Path:
    """The example's four find-faces tasks through `wrapper` (wrappers_for_tests), `defaults`
    added to every task; written next to the example's batch (its paths are relative)."""
    data = yaml.safe_load(Path(example["batch"]).read_text())
    data["wrapper"] = f"wrappers_for_tests:{wrapper}"
    data.setdefault("defaults", {}).update(defaults)
    path = Path(example["batch"]).with_name(f"batch-{name}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


#: launch options: each task's own files merged, or groups of three gathered into group partials
GROUPS = {False: ("--set", "tasks.premerge=false", "--set", "tasks.group_size=1"),
          True: ("--set", "tasks.premerge=true", "--set", "tasks.group_size=3")}


def _batch(example: dict, bogus: str) -> Path:
    """bad_uuid_find_faces: task BAD's uuid_list given BOGUS_UUIDS[bogus] too."""
    return example_batch(example, "bad_uuid_find_faces", f"bad-uuid-{bogus}", bad_index=BAD, bogus=bogus)


@pytest.mark.parametrize("premerge", [False, True], ids=["own-files", "group-partial"])
@pytest.mark.parametrize("bogus", sorted(BOGUS_UUIDS))
def test_a_task_naming_a_uuid_not_in_its_output_fails_alone(example, tmp_path, bogus, premerge):
    out = tmp_path / "faults.epc"
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", _batch(example, bogus),
                      "--output", out, *GROUPS[premerge])
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr

    # one warning says which task and what it named (once: not the Recombiner's log line too);
    # besides it only the task's progress line, if the task was merged by then, says FAILED
    # as the task's record holds it: an int is the uuid resqpy reads it as (resqmp.tasks.uuid_text)
    culprit = repr(uuid_text(BOGUS_UUIDS[bogus]))
    lines = [ln for ln in proc.stderr.splitlines() if culprit in ln]
    (warning,) = [ln for ln in lines if ln.startswith("resqmp: warning: ")]
    assert warning.startswith(f"resqmp: warning: task {BAD} (fault 2): its uuid_list names {culprit}"), warning
    assert all(ln == warning or ln.startswith(f"resqmp: task {BAD} (fault 2) FAILED: DamagedOutput") for ln in lines)

    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["totals"]["failed"] == 1 and report["totals"]["succeeded"] == 3
    (bad,) = [t for t in report["tasks"] if not t["success"]]
    assert bad["index"] == BAD and bad["error"].startswith("DamagedOutput: ") and culprit in bad["error"]

    # the model is resqpy's of the other three tasks' own files, byte for byte: nothing of task BAD
    last = {r["index"]: r for r in journal_records(out)}         # kept: the run can be resumed
    assert sorted(last) == [0, 1, 2, 3] and not last[BAD]["success"]
    good = [last[i] for i in sorted(last) if i != BAD]
    assert all(r["success"] and Path(r["epc_file"]).is_file() for r in good)
    assert_identical(out, reference(good, tmp_path))

    if premerge:
        # the bad task costs its group's partial nothing: the two good tasks of the first group
        # still share one, and the bad task has none (its own file is checked and refused)
        assert last[0].get("partial") and last[0]["partial"] == last[2].get("partial")
        assert not last[BAD].get("partial")


#: entries resqpy reads as the uuid of the part (other case, fesapi's leading underscore, a tail)
READ_AS_UUID = ("as_is", "upper", "underscore", "tail")


def _variants(u: str) -> dict[str, str]:
    return {"as_is": u, "upper": u.upper(), "underscore": "_" + u, "tail": u + "-and-a-tail",
            "absent": str(BOGUS_UUIDS["absent"]), "short": u[:35], "not_a_uuid": "x" * 36, "empty": "",
            "decimal": str(int(u.replace("-", ""), 16))}


def test_a_uuid_list_entry_is_refused_exactly_when_resqpy_fails_on_it(tmp_path):
    """merge.unknown_uuid refuses what resqpy's recombination raises on, and nothing that resqpy
    reads as the uuid of a part of the task's: tasks naming their part so are merged, the model
    resqpy's byte for byte."""
    import resqpy.model as rq
    import resqpy.olio.consolidation as cons

    from resqmp.merge import unknown_uuid
    from test_recombine import resqmp_recombine, resqpy_recombine
    from wrappers_for_tests import crs_first_surface
    _, _, epc, (surface,) = crs_first_surface(0, str(tmp_path))
    model = rq.Model(epc, quiet=True)
    for kind, entry in _variants(surface).items():
        try:
            cons.sort_uuids_list(model, [surface, entry])
            resqpy_fails = False
        except Exception:   # noqa: BLE001 - whatever resqpy raises
            resqpy_fails = True
        assert resqpy_fails == (kind not in READ_AS_UUID), kind
        assert unknown_uuid(model, [surface, entry]) == (entry if resqpy_fails else None), kind
    model.h5_release()

    records = []
    for i, kind in enumerate(READ_AS_UUID):
        _, _, epc, (surface,) = crs_first_surface(i, str(tmp_path), name=f"fault {i}")
        records.append({"index": i, "epc_file": epc, "uuid_list": [_variants(surface)[kind]]})
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    recombiner = resqmp_recombine(records, tmp_path / "ours" / "out.epc")
    assert recombiner.take_damaged() == {}
    resqpy_recombine(records, tmp_path / "theirs" / "out.epc")
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "theirs" / "out.epc")


def test_the_drop_in_returns_false_for_that_task(example, tmp_path):
    """resqmp.function_multiprocessing (in-process): where resqpy's raises and writes nothing,
    that task's success is False (its error names the culprit), the others True, the model
    resqpy's of the others (by content: resqpy's runs the tasks again, new uuids)."""
    import resqpy.multi_processing as rqmp

    import resqmp
    from resqmp.batch import load
    from wrappers_for_tests import bad_uuid_find_faces
    tasks = load(example["batch"]).tasks

    def kwargs_list(bad_index):
        return [{**k, "bad_index": bad_index, "bogus": "absent"} for k in tasks]

    with pytest.raises(AttributeError):       # resqpy's own, for the record
        rqmp.function_multiprocessing(bad_uuid_find_faces, kwargs_list(BAD), str(tmp_path / "resqpy.epc"), None,
                                      tmp_dir_path=str(tmp_path))
    assert not (tmp_path / "resqpy.epc").exists()
    success = resqmp.function_multiprocessing(bad_uuid_find_faces, kwargs_list(BAD), tmp_path / "ours.epc",
                                              cluster=None, tmp_dir_path=tmp_path)
    assert success == [i != BAD for i in range(len(tasks))]
    assert "DamagedOutput" in str(success.errors[BAD]) and repr(BOGUS_UUIDS["absent"]) in str(success.errors[BAD])
    others = [k for i, k in enumerate(kwargs_list(-1)) if i != BAD]
    assert all(rqmp.function_multiprocessing(bad_uuid_find_faces, others, str(tmp_path / "theirs.epc"), None,
                                             tmp_dir_path=str(tmp_path)))
    from epc_compare import content
    assert content(tmp_path / "ours.epc") == content(tmp_path / "theirs.epc")
