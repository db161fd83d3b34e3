"""`resqmp launch --performance-report FILE.html`: distributed's performance report of the whole
run, published atomically and named in the run report."""
from __future__ import annotations

import json
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

from browser import announce, chromium_page
from conftest import run_resqmp
from live_launch import Launch, gated_batch
from resqmp.errors import ExitCode

MARKER = "<title>Dask Performance Report</title>"
RUN_KEY = re.compile(r"resqmp-[0-9a-f]{8}-(\d+)-(\d+)-a\d+")


def assert_complete_report(path: Path, tasks: int) -> None:
    """A whole HTML document holding the task stream (every task of the run), the worker profile
    and the bandwidth plots."""
    text = path.read_text()
    assert text.lstrip().startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert MARKER in text
    for tab in ("Task Stream", "Worker Profile (compute)", "Bandwidth (Workers)", "Summary"):
        assert f'"title":"{tab}"' in text, tab
    done = {i for first, last in RUN_KEY.findall(text) for i in range(int(first), int(last) + 1)}
    assert done == set(range(tasks)), done


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != name and name in p.name)


def test_a_run_writes_its_performance_report(example, tmp_path, capsys):
    out, perf = tmp_path / "out.epc", tmp_path / "perf.html"
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", example["batch"],
                      "--output", out, "--performance-report", perf, check=0)
    report = json.loads(out.with_name("out.report.json").read_text())
    tasks = report["totals"]["tasks"]
    assert report["performance_report"] == str(perf)
    assert f"performance report {perf}" in proc.stderr
    assert_complete_report(perf, tasks)
    assert leftovers(tmp_path, "perf.html") == []
    # its Summary says what ran (the command, batch, profile), not resqmp's own code
    calling = perf.read_text().split("Calling Code", 1)[1][:3000]
    assert "launch --profile local --workers 2 --batch" in calling and "def recorded" not in calling
    assert str(example["batch"]) in calling and str(out) in calling
    # BokehJS is inside the file: it renders with no network, as on an offline cluster
    with chromium_page() as page:
        page.goto(perf.as_uri(), wait_until="load", timeout=120_000)
        page.wait_for_function("() => typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0",
                               timeout=120_000)
        assert page.locator("canvas").count() >= 1
        page.screenshot(path=str(tmp_path / "performance-report.png"))
    announce(capsys, "performance report", perf)


def test_a_run_with_failed_tasks_still_writes_a_complete_report(example_with_outside, tmp_path):
    out, perf = tmp_path / "faults.epc", tmp_path / "perf.html"
    proc = run_resqmp("launch", "--profile", "local", "--batch", example_with_outside["batch"],
                      "--output", out, "--performance-report", perf)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["performance_report"] == str(perf)
    assert_complete_report(perf, report["totals"]["tasks"])


def test_an_interrupted_run_leaves_no_half_written_report(example, tmp_path):
    """Ctrl-C / SIGTERM mid-run: nothing at FILE, no partial file beside it; an earlier run's
    report at FILE is left exactly as it was."""
    batch, gate = gated_batch(example, tmp_path)
    out, perf = tmp_path / "out.epc", tmp_path / "perf.html"
    earlier = f"<!DOCTYPE html>\n<html><head>{MARKER}</head><body>an earlier run</body></html>\n"
    perf.write_text(earlier)
    run = Launch("--profile", "local", "--workers", "2", "--batch", batch, "--output", out,
                 "--performance-report", perf)
    try:
        run.wait_for_line(re.compile(r"resqmp: task 0\b.* (done|succeeded|ok)"))
        code = run.interrupt()
    finally:
        gate.touch()
        run.stop()
    assert code == ExitCode.INTERRUPTED, "\n".join(run.lines)
    assert perf.read_text() == earlier
    assert leftovers(tmp_path, "perf.html") == []
    assert not out.exists()


@contextmanager
def tiny_tmpfs(path: Path, size: str):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_report_that_does_not_fit_is_not_half_written_and_the_output_is_kept(example, tmp_path):
    """The report (~2 MB) on a 256 KiB filesystem: the write fails part way; the partial file is
    removed, the run's model is still published, and the run report says why there is no report."""
    out = tmp_path / "out.epc"
    with tiny_tmpfs(tmp_path / "small", "256k") as small:
        perf = small / "perf.html"
        proc = run_resqmp("launch", "--profile", "local", "--batch", example["batch"], "--output", out,
                          "--performance-report", perf, check=0)
        assert list(small.iterdir()) == []
    report = json.loads(out.with_name("out.report.json").read_text())
    assert report["performance_report"] is None
    assert "No space left on device" in report["performance_report_error"]
    assert f"performance report {perf} not written" in proc.stderr and "Traceback" not in proc.stderr
    assert out.exists() and report["totals"]["failed"] == 0


def test_a_file_that_is_not_a_performance_report_is_never_replaced(example, tmp_path):
    out, notes = tmp_path / "out.epc", tmp_path / "notes.html"
    notes.write_text("<html>my own notes</html>\n")
    proc = run_resqmp("launch", "--profile", "local", "--batch", example["batch"], "--output", out,
                      "--performance-report", notes)
    assert proc.returncode == ExitCode.OUTPUT, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("resqmp: error: ")]
    assert len(errors) == 1 and str(notes) in errors[0] and "not a Dask performance report" in errors[0]
    assert "cluster up" not in proc.stderr                  # refused before provisioning
    assert notes.read_text() == "<html>my own notes</html>\n" and not out.exists()


def test_the_report_may_not_be_one_of_the_runs_own_files(example, tmp_path):
    out = tmp_path / "out.epc"
    for clash in (out, tmp_path / "out.report.json"):
        proc = run_resqmp("launch", "--profile", "local", "--batch", example["batch"], "--output", out,
                          "--performance-report", clash)
        assert proc.returncode == ExitCode.OUTPUT, proc.stderr
        assert "cluster up" not in proc.stderr and not out.exists()


def test_a_missing_folder_is_refused_before_provisioning(example, tmp_path):
    proc = run_resqmp("launch", "--profile", "local", "--batch", example["batch"], "--output",
                      tmp_path / "out.epc", "--performance-report", tmp_path / "no" / "perf.html")
    assert proc.returncode == ExitCode.OUTPUT and "does not exist" in proc.stderr
    assert "cluster up" not in proc.stderr
