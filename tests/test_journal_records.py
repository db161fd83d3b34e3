"""A journaled record is data (an edited journal, a damaged disk): a task counts as done on resume
only when its record is a well-formed success backed by its output file in this run's task
folder. Anything else makes the task run again, said in one warning line; a line that is no
result of resqmp's at all (not JSON, a field of the wrong type) is refused before any work
(test_data_safety). Real launches, real files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_resqmp
from epc_compare import content
from resqmp.errors import ExitCode
from test_data_safety import failing


def launch(batch, out, *extra, **kwargs):
    return run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, *extra, **kwargs)


def _null_epc_no_uuids(record, run_dir):
    record.update(epc_file=None, uuid_list=[])


def _null_epc(record, run_dir):
    record["epc_file"] = None                  # its uuids kept: nothing holds them


def _empty_epc(record, run_dir):
    record["epc_file"] = ""


def _the_task_folder_itself(record, run_dir):
    record["epc_file"] = str(run_dir)         # in this run's folder, but no task's file


@pytest.mark.parametrize("edit", [_null_epc_no_uuids, _null_epc, _empty_epc, _the_task_folder_itself],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_success_record_without_its_output_file_is_not_done_on_resume(work, edit):
    """A record that says success but names no output file of this run (null, empty, a folder)
    counted as done: the task was silently missing from OUT while the resume reported success."""
    batch = failing(work, "failing.yaml")              # task 1 fails: the journal stays
    out = work / "faults.epc"
    assert launch(batch, out).returncode == ExitCode.TASKS_FAILED
    reference = content(out)
    journal = work / "faults.journal.jsonl"
    lines = journal.read_text().splitlines()
    run_dir = Path(json.loads(lines[0])["run_dir"])
    n = next(i for i, text in enumerate(lines[1:], 1) if json.loads(text)["success"])
    record = json.loads(lines[n])
    edit(record, run_dir)
    lines[n] = json.dumps(record)
    journal.write_text("\n".join(lines) + "\n")

    proc = launch(batch, out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert "resuming: 2 of 4" in proc.stderr, proc.stderr          # the other two successes
    warnings = [ln for ln in proc.stderr.splitlines() if str(journal) in ln and "warning" in ln]
    assert len(warnings) == 1, proc.stderr
    assert f"task {record['index']}" in warnings[0] and f"line {n + 1}" in warnings[0], warnings[0]
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["tasks"][record["index"]]["resumed"] is False
    assert report["tasks"][record["index"]]["success"] is True
    assert content(out) == reference                   # the task is in the model again


def test_a_resume_of_whole_records_says_nothing_about_them(work):
    """Records as resqmp wrote them: resumed, no warning."""
    batch = failing(work, "failing.yaml")
    out = work / "faults.epc"
    assert launch(batch, out).returncode == ExitCode.TASKS_FAILED
    proc = launch(batch, out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert "resuming: 3 of 4" in proc.stderr, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
