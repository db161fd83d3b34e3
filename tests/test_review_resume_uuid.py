"""Review of the resume look-once change (88da56c) and of the uuid_list check (179c96d).

resqpy's recombination reads a wrapper's uuid_list entries as uuids in any of the forms
resqpy.olio.uuid.uuid_as_int takes: a uuid string (any case, fesapi's leading underscore, a tail),
a uuid.UUID, or a uuid int (sort_uuids_list: "the uuids list (or uuid ints list)"). A task record
turned every entry into str(entry), so a uuid int became its decimal digits, which name no part:
since 179c96d such a task was refused as damaged (exit 3, "a wrapper's stale or malformed uuid")
where resqpy's function_multiprocessing merges it. These tests run wrappers that return their
uuids as ints and expect resqpy's model, byte for byte.
"""
from __future__ import annotations

import json
import os
import uuid as uuid_mod

import pytest
import yaml

from conftest import run_resqmp
from resqmp.errors import ExitCode
from test_recombine import assert_identical, resqpy_recombine
from wrappers_for_tests import crs_first_surface, log_output, logged_outputs

ALLOW = ("--allow-wrapper", "test_review_resume_uuid:*")


def int_uuid_surface(index, parent_tmp_dir, log_file, name=None):
    """crs_first_surface, its uuid_list given as uuid ints (resqpy's sort_uuids_list takes them);
    appends (index, epc_file, uuid_list) to log_file for the reference."""
    index, success, epc, uuids = crs_first_surface(index, parent_tmp_dir, name=name or f"fault {index}")
    ints = [uuid_mod.UUID(u).int for u in uuids]
    log_output(log_file, index, epc, ints)
    return index, success, epc, ints


@pytest.mark.parametrize("premerge", [False, True], ids=["own-files", "group-partial"])
def test_a_launch_merges_uuid_ints_as_resqpy_does(tmp_path, premerge):
    """Four tasks whose wrapper returns uuid ints: exit 0 and resqpy's model of their outputs (its
    recombination given the ints), EPC and .h5 byte for byte. On main: every task DamagedOutput
    (its uuid_list names the decimal digits), exit 3."""
    log_file = tmp_path / "calls.jsonl"
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "test_review_resume_uuid:int_uuid_surface",
                                     "defaults": {"log_file": str(log_file)},
                                     "tasks": [{"name": f"fault {i}"} for i in range(4)]}, sort_keys=False))
    out = tmp_path / "ints.epc"
    groups = ("--set", "tasks.premerge=true", "--set", "tasks.group_size=2") if premerge else \
        ("--set", "tasks.premerge=false", "--set", "tasks.group_size=1")
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", batch, "--output", out,
                      "--keep-task-files", *groups, *ALLOW)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "DamagedOutput" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(out.with_name("ints.report.json").read_text())
    assert report["totals"]["succeeded"] == 4
    if premerge:      # each group's partial holds both its tasks' shares (on main: none of them)
        manifests = sorted(tmp_path.glob(".resqmp-tasks/*/groups/*.json"))
        assert [sorted(json.loads(m.read_text())["tasks"]) for m in manifests] == [["0", "1"], ["2", "3"]]
    (tmp_path / "ref").mkdir()
    resqpy_recombine(logged_outputs(log_file), tmp_path / "ref" / "ref.epc")
    assert_identical(out, tmp_path / "ref" / "ref.epc")


def test_the_drop_in_merges_uuid_ints_as_resqpy_does(tmp_path):
    """resqmp.function_multiprocessing in process: every task True (on main: every task False,
    DamagedOutput), the model resqpy's recombination of the same outputs given the ints."""
    import resqmp
    log_file = tmp_path / "calls.jsonl"
    kwargs_list = [{"log_file": str(log_file)} for _ in range(3)]
    success = resqmp.function_multiprocessing(int_uuid_surface, kwargs_list, tmp_path / "ours.epc",
                                              cluster=None, tmp_dir_path=tmp_path, clean_up=False)
    assert success == [True, True, True], getattr(success, "errors", None)
    (tmp_path / "ref").mkdir()
    resqpy_recombine(logged_outputs(log_file), tmp_path / "ref" / "ref.epc")
    assert_identical(tmp_path / "ours.epc", tmp_path / "ref" / "ref.epc")
    assert all(os.path.exists(r["epc_file"]) for r in logged_outputs(log_file))
