"""A wrapper whose uuid_list names its model's HDF5 external part (obj_EpcExternalPartReference),
as one returning the uuid of every part its model holds does (model.uuids() leaves that part out;
its parts_forest does not): resqpy's recombination accepts it (copy_part_from_other_model returns
None for that type: nothing copied, no relationship), and so must group partials.

A group partial holds every task part but the tasks' external parts: it has one of its own (another
uuid). The manifest's share named the task's external part's uuid all the same, so the launcher's
check of the partial (premerge._epc_problem: every uuid a share names has its part) refused every
group's partial with a warning that read like damage ("it lacks the part of <ext uuid>") and merged
the tasks' own files: the same model, one alarming warning per group, the partials' gain lost.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from conftest import run_resqmp
from resqmp.errors import ExitCode
from resqmp.premerge import FOLDER, PartialReader, manifest_of
from test_recombine import assert_identical, resqpy_recombine
from wrappers_for_tests import crs_first_surface, log_output, logged_outputs

ALLOW = ("--allow-wrapper", "test_ext_uuid_in_list:*")
EXT = "obj_EpcExternalPartReference"


def all_uuids_surface(index, parent_tmp_dir, log_file, name=None):
    """crs_first_surface (a CRS, a fault feature and interpretation, a small surface with arrays in
    the task's HDF5 file), its uuid_list the uuid of every part of its model, the external part's
    too (in the model's part order: that part comes first); logged for the reference (log_output)."""
    import resqpy.model as rq
    index, success, epc, _ = crs_first_surface(index, parent_tmp_dir, name=name or f"fault {index}")
    model = rq.Model(epc, quiet=True)
    uuids = [str(model.uuid_for_part(part)) for part in model.parts_forest]
    assert str(model.h5_uuid()) in uuids          # the point of this wrapper
    model.h5_release()
    log_output(log_file, index, epc, uuids)
    return index, success, epc, uuids


def test_a_uuid_list_naming_the_ext_part_is_merged_from_the_group_partials(tmp_path, caplog):
    """Six tasks in two groups of three, each uuid_list naming the task's external part: exit 0, no
    group partial warning, each group's partial holds its three shares and the launcher's reader
    takes every one of them (none refused), and the model is resqpy's recombination of the same
    task outputs, EPC and .h5 byte for byte. On main: both partials refused ("it lacks the part
    of <the task's ext uuid>"), two warnings."""
    import resqpy.model as rq
    log_file = tmp_path / "calls.jsonl"
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "test_ext_uuid_in_list:all_uuids_surface",
                                     "defaults": {"log_file": str(log_file)},
                                     "tasks": [{"name": f"fault {i}"} for i in range(6)]}, sort_keys=False))
    out = tmp_path / "all.epc"
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", batch, "--output", out,
                      "--set", "tasks.premerge=true", "--set", "tasks.group_size=3", "--keep-task-files", *ALLOW)
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert "group partial" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "DamagedOutput" not in proc.stderr, proc.stderr
    report = json.loads(out.with_name("all.report.json").read_text())
    assert report["totals"]["succeeded"] == 6

    # each group's partial holds its three tasks' shares
    folder = Path(report["task_directory"]) / FOLDER
    partials = sorted(folder.glob("*.epc"))
    shares = {p: sorted(json.loads(manifest_of(p).read_text())["tasks"], key=int) for p in partials}
    assert sorted(shares.values()) == [["0", "1", "2"], ["3", "4", "5"]], shares

    logged = logged_outputs(log_file)
    # every task's uuid_list does name its external part (what the launch had to merge)
    for r in logged:
        task = rq.Model(r["epc_file"], quiet=True)
        assert str(task.h5_uuid()) in r["uuid_list"]
        assert any(task.type_of_part(task.part_for_uuid(u)) == EXT for u in r["uuid_list"])

    # the launcher's reader takes every share from the kept partials (the run's own check of the
    # partial, premerge._epc_problem and _h5_problem), saying nothing
    reader = PartialReader(report["task_directory"])
    with caplog.at_level(logging.WARNING, logger="resqmp"):
        try:
            for p, indices in shares.items():
                for i in indices:
                    assert reader.share(str(p), int(i), appear=0) is not None, (p, i)
        finally:
            reader.release()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text

    (tmp_path / "ref").mkdir()
    resqpy_recombine(logged, tmp_path / "ref" / "ref.epc")
    assert_identical(out, tmp_path / "ref" / "ref.epc")
