"""Data that must never be lost (issue 9): OUT is never an input, a worse run never replaces a
better one, one run never deletes another's staging, everything about OUT fails in preflight,
and a journal that cannot be resumed from is refused before any work. Real launches, real files."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import run_resqmp, slow_batch
from epc_compare import content
from proc_watch import start_launch, wait_for
from resqmp.errors import ExitCode
from test_bad_inputs import assert_one_line_error, mounted  # noqa: F401 - mounted is a fixture


def launch(batch, out, *extra, **kwargs):
    return run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, *extra, **kwargs)


def digest(*paths) -> dict:
    """Bytes of files (None when missing): proves a file was not touched."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


def refused_before_work(proc, *fragments):
    assert "cluster up" not in proc.stderr, proc.stderr   # refused before any cluster started
    return assert_one_line_error(proc, ExitCode.OUTPUT, *fragments)


def report_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".report.json").read_text())


def failing(work: Path, name: str) -> Path:
    """The find-faces batch with its 2nd task on a surface that misses the grid (it raises)."""
    data = yaml.safe_load((work / "batch.yaml").read_text())
    data["tasks"][1]["surface_uuid"] = data["defaults"]["grid_uuid"]     # a grid is not a surface
    path = work / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- OUT is one of the inputs ----------------------------------------------------------------------

def _out_is_the_grid(work):
    return work / "model.epc", work / "model.epc"


def _symlink_to_the_grid(work):
    (work / "link.epc").symlink_to(work / "model.epc")
    return work / "link.epc", work / "model.epc"


def _hard_link_to_the_grid(work):
    os.link(work / "model.epc", work / "hard.epc")
    return work / "hard.epc", work / "model.epc"


def _h5_is_the_grids_h5(work):
    os.link(work / "model.h5", work / "other.h5")
    return work / "other.epc", work / "model.h5"


@pytest.mark.parametrize("setup", [_out_is_the_grid, _symlink_to_the_grid, _hard_link_to_the_grid,
                                   _h5_is_the_grids_h5], ids=lambda f: f.__name__.strip("_"))
def test_out_that_is_an_input_epc_is_refused(work, setup):
    out, culprit = setup(work)
    before = digest(work / "model.epc", work / "model.h5")
    for extra in ((), ("--overwrite",)):             # --overwrite never allows replacing an input
        proc = launch(work / "batch.yaml", out, *extra)
        refused_before_work(proc, str(culprit))
    assert digest(work / "model.epc", work / "model.h5") == before
    assert not list(work.glob("*.journal.jsonl")) and not list(work.glob("*.report.json"))


def test_report_that_would_land_on_the_batch_is_refused(work):
    """A JSON batch named run.report.json with OUT run.epc: the report would replace the batch."""
    data = yaml.safe_load((work / "batch.yaml").read_text())
    batch = work / "run.report.json"
    batch.write_text(json.dumps(data))
    before = digest(batch)
    proc = launch(batch, work / "run.epc")
    line = refused_before_work(proc, str(work / "run.epc"), str(batch))
    assert "report" in line
    assert digest(batch) == before and not (work / "run.epc").exists()


def test_journal_that_would_land_on_an_input_is_refused(work):
    shutil.copy(work / "model.epc", work / "run.journal.jsonl")     # an input EPC with that name
    before = digest(work / "run.journal.jsonl")
    batch = _edit(work, lambda d: d["defaults"].update(surface_epc="run.journal.jsonl"))
    proc = launch(batch, work / "run.epc")
    line = refused_before_work(proc, str(work / "run.journal.jsonl"))
    assert "journal" in line
    assert digest(work / "run.journal.jsonl") == before


def test_inputs_inside_the_task_directory_are_refused(work, tmp_path):
    """--fresh (and a successful run) removes OUT's task directory: inputs there would go with it."""
    from resqmp.run import run_directory
    shared = tmp_path / "shared"
    out = tmp_path / "faults.epc"
    run_dir = run_directory(shared, out.resolve())
    shutil.copytree(work, run_dir)
    before = digest(run_dir / "model.epc", run_dir / "batch.yaml")
    proc = launch(run_dir / "batch.yaml", out, "--fresh", "--set", f"storage.shared_directory={shared}")
    refused_before_work(proc, str(run_dir))
    assert digest(run_dir / "model.epc", run_dir / "batch.yaml") == before


def test_inputs_inside_a_folder_named_like_outs_staging_are_refused(work, tmp_path):
    """Stale staging folders of OUT are removed at the start of a run: never one holding inputs."""
    staging = tmp_path / ".faults.staging-0123abcd"
    shutil.copytree(work, staging)
    proc = launch(staging / "batch.yaml", tmp_path / "faults.epc")
    refused_before_work(proc, str(staging))
    assert (staging / "model.epc").exists() and (staging / "batch.yaml").exists()


def _edit(work, change, name="batch.yaml"):
    data = yaml.safe_load((work / name).read_text())
    change(data)
    (work / name).write_text(yaml.safe_dump(data))
    return work / name


# -- a worse run never replaces a better one -------------------------------------------------------

def test_a_run_with_failed_tasks_keeps_the_existing_out_and_writes_its_model_beside_it(work, tmp_path):
    out = tmp_path / "faults.epc"
    launch(work / "batch.yaml", out, check=0)
    good = digest(out, out.with_suffix(".h5"))
    good_content = content(out)
    proc = launch(failing(work, "batch-failing.yaml"), out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert digest(out, out.with_suffix(".h5")) == good                 # the better model is kept
    partial = tmp_path / "faults.partial.epc"
    assert f"output {out} kept" in proc.stdout and f"partial model {partial}" in proc.stdout
    report = report_of(out)
    assert report["output"] == str(out) and report["partial_output"] == str(partial)
    assert report["exit_code"] == ExitCode.TASKS_FAILED
    # the partial model is complete on its own: its EPC names its own .h5
    assert sorted(content(partial)["faces"]) == ["fault 1", "fault 3", "fault 4"]
    with zipfile.ZipFile(partial) as z:
        rels = [z.read(n).decode() for n in z.namelist() if "EpcExternalPartReference" in n and n.endswith(".rels")]
    assert rels and all('Target="faults.partial.h5"' in r for r in rels)
    assert content(out) == good_content
    # the same command again, once the batch is fixed: OUT is replaced, the partial model goes
    launch(work / "batch.yaml", out, "--fresh", check=0)
    assert content(out) == good_content
    assert not partial.exists() and not partial.with_suffix(".h5").exists()
    assert report_of(out)["partial_output"] is None


def test_a_run_where_every_task_fails_keeps_the_existing_out(work, tmp_path):
    out = tmp_path / "faults.epc"
    launch(work / "batch.yaml", out, check=0)
    good = digest(out, out.with_suffix(".h5"))
    batch = work / "all-fail.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "wrappers_for_tests:sleepy_wrapper",
                                     "tasks": [{"seconds": 0, "fail": True}] * 3}))
    proc = launch(batch, out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert digest(out, out.with_suffix(".h5")) == good
    assert report_of(out)["partial_output"] == str(tmp_path / "faults.partial.epc")
    assert (tmp_path / "faults.partial.epc").exists()


def test_a_run_whose_shared_directory_fills_keeps_the_existing_out(work, tmp_path, mounted):  # noqa: F811
    out = tmp_path / "faults.epc"
    launch(work / "batch.yaml", out, check=0)
    good = digest(out, out.with_suffix(".h5"))
    tiny = mounted(tmp_path / "tiny", "size=64k")
    proc = launch(work / "batch.yaml", out, "--set", f"storage.shared_directory={tiny}")
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert report_of(out)["totals"]["failed"] >= 1
    assert digest(out, out.with_suffix(".h5")) == good
    assert report_of(out)["partial_output"] == str(tmp_path / "faults.partial.epc")


def test_without_an_earlier_out_the_partial_model_goes_at_out(work, tmp_path):
    out = tmp_path / "faults.epc"
    proc = launch(failing(work, "batch-failing.yaml"), out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert sorted(content(out)["faces"]) == ["fault 1", "fault 3", "fault 4"]
    assert report_of(out)["partial_output"] is None
    assert not (tmp_path / "faults.partial.epc").exists()


def _foreign_out(tmp_path, work):
    shutil.copy(work / "model.epc", tmp_path / "faults.epc")
    shutil.copy(work / "model.h5", tmp_path / "faults.h5")
    return tmp_path / "faults.epc"


def _foreign_h5(tmp_path, work):
    shutil.copy(work / "model.h5", tmp_path / "faults.h5")
    return tmp_path / "faults.h5"


def _foreign_report(tmp_path, work):
    (tmp_path / "faults.report.json").write_text('{"my": "notes"}\n')
    return tmp_path / "faults.report.json"


def _report_of_another_output(tmp_path, work):
    """Our report, but naming another OUT (copied here by hand): it says nothing about this OUT."""
    shutil.copy(work / "model.epc", tmp_path / "faults.epc")
    (tmp_path / "faults.report.json").write_text(json.dumps({"output": str(tmp_path / "x.epc"), "tasks": []}))
    return tmp_path / "faults.epc"


@pytest.mark.parametrize("setup", [_foreign_out, _foreign_h5, _foreign_report, _report_of_another_output],
                         ids=lambda f: f.__name__.strip("_"))
def test_files_resqmp_did_not_write_are_replaced_only_with_overwrite(work, tmp_path, setup):
    culprit = setup(tmp_path, work)
    out = tmp_path / "faults.epc"
    files = [out, out.with_suffix(".h5"), tmp_path / "faults.report.json"]
    before = digest(*files)
    proc = launch(work / "batch.yaml", out)
    refused_before_work(proc, str(culprit), "--overwrite")
    assert digest(*files) == before
    launch(work / "batch.yaml", out, "--overwrite", check=0)
    assert len(content(out)["faces"]) == 4
    assert report_of(out)["output"] == str(out)


def test_a_partial_model_path_resqmp_did_not_write_is_refused(work, tmp_path):
    out = tmp_path / "faults.epc"
    launch(work / "batch.yaml", out, check=0)
    (tmp_path / "faults.partial.epc").write_text("mine")
    proc = launch(work / "batch.yaml", out)
    refused_before_work(proc, str(tmp_path / "faults.partial.epc"), "--overwrite")
    assert (tmp_path / "faults.partial.epc").read_text() == "mine"


# -- one run never deletes another's staging -------------------------------------------------------

@pytest.mark.parametrize("name", ["a[b]", "a?", "a*"])
def test_concurrent_runs_on_different_outputs_never_touch_each_others_files(slow, tmp_path, name):
    """OUT names with glob characters: the stale-staging cleanup at the start of one run must not
    match the staging folder of a run on `ab.epc` in the same folder."""
    first = tmp_path / "ab.epc"
    second = tmp_path / f"{name}.epc"

    def staging(stem):
        return [p for p in tmp_path.iterdir() if p.name.startswith(f".{stem}.staging-")]

    slower = slow_batch({"batch": slow["batch"]}, "slower", delay=3.0)     # 8 tasks, 3 s each
    proc = start_launch(slower, first)
    try:
        # (preflight's probe of OUT's folder makes and removes a staging folder before the journal exists)
        journal = first.with_name("ab.journal.jsonl")
        wait_for(lambda: staging("ab") and journal.exists() and len(journal.read_text().splitlines()) >= 2,
                 what="the first run's staging folder and a first result")
        mine = staging("ab")
        proc2 = start_launch(slow["folder"] / "batch.yaml", second)
        # the second run has cleaned up stale staging folders once its own staging folder exists
        wait_for(lambda: staging(name) or proc2.poll() is not None, what="the second run's staging folder")
        assert staging("ab") == mine                     # the first run's, still in use
        assert proc.poll() is None                        # ...by a first run still running
        _, stderr2 = proc2.communicate(timeout=300)
    finally:
        _, stderr = proc.communicate(timeout=300)
    assert proc2.returncode == 0, stderr2
    assert proc.returncode == 0, stderr
    assert content(first) == slow["reference"]
    assert content(second) == slow["reference"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ab.epc", "ab.h5", "ab.report.json", f"{name}.epc", f"{name}.h5", f"{name}.report.json"])


# -- everything about OUT fails in preflight ------------------------------------------------------

def _upper_case_suffix(tmp_path):
    return tmp_path / "x.EPC", ["x.EPC", ".epc"]


def _h5_is_a_directory(tmp_path):
    (tmp_path / "x.h5").mkdir()
    return tmp_path / "x.epc", [str(tmp_path / "x.h5"), "directory"]


def _report_is_a_directory(tmp_path):
    (tmp_path / "x.report.json").mkdir()
    return tmp_path / "x.epc", [str(tmp_path / "x.report.json"), "directory"]


def _h5_is_immutable(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"")
    subprocess.run(["chattr", "+i", str(tmp_path / "x.h5")], check=True)
    return tmp_path / "x.epc", [str(tmp_path / "x.h5"), "not writable"]


def _name_too_long(tmp_path):
    # OUT itself fits in 255 bytes, its staging folder .NAME.staging-XXXXXXXX does not
    return tmp_path / ("n" * 240 + ".epc"), ["too long"]


def _name_not_xml(tmp_path):
    # resqpy records the .h5's name inside the EPC, as XML
    return tmp_path / "x\x01.epc", ["XML", "choose another name"]


@pytest.mark.parametrize("setup", [_upper_case_suffix, _h5_is_a_directory, _report_is_a_directory,
                                   _h5_is_immutable, _name_too_long, _name_not_xml],
                         ids=lambda f: f.__name__.strip("_"))
def test_everything_about_out_fails_in_preflight(work, tmp_path, setup):
    out, fragments = setup(tmp_path)
    try:
        proc = launch(work / "batch.yaml", out)
        refused_before_work(proc, *fragments)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if "journal" in p.name or "staging" in p.name]
    finally:
        if (tmp_path / "x.h5").is_file():
            subprocess.run(["chattr", "-i", str(tmp_path / "x.h5")], check=False)


# -- a journal that cannot be resumed from --------------------------------------------------------

def _journal_header(batch: Path) -> str:
    from resqmp.batch import load
    return json.dumps({"digest": load(batch).digest, "run_dir": "/nowhere"})


def _not_utf8(batch):
    return (_journal_header(batch) + "\n").encode() + b'{"index": 0, "name": "f\xff"}\n', ["UTF-8", "line 2"]


def _index_outside_the_batch(batch):
    record = {"index": 99, "success": True, "epc_file": None, "uuid_list": [], "seconds": 0.1}
    return (_journal_header(batch) + "\n" + json.dumps(record) + "\n").encode(), ["line 2", "99"]


def _epc_file_not_a_path(batch):
    record = {"index": 0, "success": True, "epc_file": 5, "uuid_list": [], "seconds": 0.1}
    return (_journal_header(batch) + "\n" + json.dumps(record) + "\n").encode(), ["line 2", "epc_file"]


def _uuid_list_not_strings(batch):
    record = {"index": 0, "success": True, "epc_file": "/nowhere/x.epc", "uuid_list": [1], "seconds": 0.1}
    return (_journal_header(batch) + "\n" + json.dumps(record) + "\n").encode(), ["line 2", "uuid_list"]


# a line that is no result resqmp writes (a field of another type) is refused like a garbled one;
# a well-formed success whose output file is missing runs again instead (test_journal_records.py).
# A first line that is not resqmp's header is not resqmp's journal: never replaced, not even with
# --fresh (test_safety_leftovers.py)
@pytest.mark.parametrize("make", [_not_utf8, _index_outside_the_batch, _epc_file_not_a_path,
                                  _uuid_list_not_strings],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_journal_that_cannot_be_resumed_is_refused_before_any_work(work, tmp_path, make):
    out = tmp_path / "faults.epc"
    text, fragments = make(work / "batch.yaml")
    journal = tmp_path / "faults.journal.jsonl"
    journal.write_bytes(text)
    proc = launch(work / "batch.yaml", out)
    refused_before_work(proc, str(journal), "--fresh", *fragments)
    assert journal.read_bytes() == text                  # kept as it was, for the user to look at
    launch(work / "batch.yaml", out, "--fresh", check=0)
    assert len(content(out)["faces"]) == 4


# -- resqmp example ------------------------------------------------------------------------------

def test_example_into_a_read_only_folder(tmp_path, mounted):  # noqa: F811
    ro = mounted(tmp_path / "ro", "ro", "size=1m")
    proc = run_resqmp("example", "--out", ro)
    assert_one_line_error(proc, ExitCode.OUTPUT, str(ro), "not writable")


def test_example_never_replaces_files_it_did_not_write(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "model.epc").write_text("the user's own model")
    proc = run_resqmp("example", "--out", folder)
    assert_one_line_error(proc, ExitCode.OUTPUT, str(folder / "model.epc"), "not written by resqmp example")
    assert (folder / "model.epc").read_text() == "the user's own model"
    assert sorted(p.name for p in folder.iterdir()) == ["model.epc"]
    # an earlier example's own files are replaced: `make demo` runs again
    run_resqmp("example", "--out", tmp_path / "demo", check=0)
    run_resqmp("example", "--out", tmp_path / "demo", "--surfaces", "2", check=0)
    assert len(yaml.safe_load((tmp_path / "demo" / "batch.yaml").read_text())["tasks"]) == 2
