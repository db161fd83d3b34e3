"""Every bad input: one line naming the culprit, a documented exit code, no traceback, nothing
at OUT, and no cluster provisioned when the error is detectable before."""
from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

from conftest import BIN, run_resqmp
from proc_watch import new_marker, wait_until_gone
from resqmp.errors import ExitCode


def assert_one_line_error(proc, code, *fragments):
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("resqmp: error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def edit_batch(work, change, name="batch.yaml"):
    data = yaml.safe_load((work / name).read_text())
    change(data)
    (work / name).write_text(yaml.safe_dump(data))
    return work / name


def write_profile(tmp_path, text):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


# (id, how to build the command's arguments, exit code, fragments the line must name)
def _cases():
    return [
        ("unknown profile", lambda w, t: ["--profile", "nosuch"], ExitCode.PROFILE, ["profile 'nosuch': not found"]),
        ("unknown key in profile", lambda w, t: ["--profile", write_profile(t, "backend: local\nscaling: {wrkers: 2}\n")],
         ExitCode.PROFILE, ["site.yaml", "unknown key scaling.wrkers"]),
        ("wrong type in profile", lambda w, t: ["--profile", write_profile(t, "backend: local\nscaling: {workers: two}\n")],
         ExitCode.PROFILE, ["site.yaml", "scaling.workers: expected integer"]),
        ("unknown backend", lambda w, t: ["--profile", write_profile(t, "backend: condor\n")],
         ExitCode.PROFILE, ["site.yaml", "backend: 'condor' is not one of"]),
        ("profile YAML syntax", lambda w, t: ["--profile", write_profile(t, "backend: local\nscaling: {workers: 2\n")],
         ExitCode.PROFILE, ["site.yaml", "YAML syntax error"]),
        ("bad --set", lambda w, t: ["--profile", "local", "--set", "scaling.workers"], ExitCode.PROFILE,
         ["--set 'scaling.workers': expected KEY=VALUE"]),
        ("batch YAML syntax", lambda w, t: ["--profile", "local", "--batch", _write(w / "bad.yaml", "tasks: [\n")],
         ExitCode.BATCH, ["bad.yaml", "syntax error"]),
        ("batch missing", lambda w, t: ["--profile", "local", "--batch", w / "nothere.yaml"], ExitCode.BATCH,
         ["nothere.yaml: not found"]),
        ("wrapper name not found", lambda w, t: ["--profile", "local", "--batch",
                                                 edit_batch(w, lambda d: d.update(wrapper="find_fault_faces"))],
         ExitCode.BATCH, ["wrapper 'find_fault_faces': not a resqpy wrapper"]),
        ("wrapper module not found", lambda w, t: ["--profile", "local", "--allow-wrapper", "mysite.faults:run", "--batch",
                                                   edit_batch(w, lambda d: d.update(wrapper="mysite.faults:run"))],
         ExitCode.BATCH, ["cannot import module 'mysite.faults'"]),
        ("input EPC missing", lambda w, t: ["--profile", "local", "--batch",
                                            edit_batch(w, lambda d: d["defaults"].update(surface_epc="surfaces.epc"))],
         ExitCode.BATCH, ["surface_epc", "surfaces.epc: file not found"]),
        ("uuid not in its EPC", lambda w, t: ["--profile", "local", "--batch", edit_batch(
            w, lambda d: d["tasks"][1].update(surface_uuid="6f1c1d2e-0000-4000-8000-000000000001"))],
         ExitCode.BATCH, ["tasks[1] (fault 2)", "6f1c1d2e-0000-4000-8000-000000000001 is not a part of"]),
        ("output folder is a file", lambda w, t: ["--profile", "local", "--output", _write(t / "afile", "x") / "o.epc"],
         ExitCode.OUTPUT, ["is not a directory"]),
        ("output folder missing", lambda w, t: ["--profile", "local", "--output", t / "no" / "such" / "o.epc"],
         ExitCode.OUTPUT, ["does not exist"]),
        ("output is a directory", lambda w, t: ["--profile", "local", "--output", _mkdir(t / "d.epc")],
         ExitCode.OUTPUT, ["is a directory"]),
    ]


def _write(path, text):
    path.write_text(text)
    return path


def _mkdir(path):
    path.mkdir()
    return path


@pytest.mark.parametrize("case", _cases(), ids=[c[0] for c in _cases()])
def test_bad_input_before_provisioning(work, tmp_path, case):
    _, build, code, fragments = case
    args = build(work, tmp_path)
    if "--batch" not in args:
        args += ["--batch", work / "batch.yaml"]
    if "--output" not in args:
        args += ["--output", tmp_path / "out.epc"]
    out = args[args.index("--output") + 1]
    proc = run_resqmp("launch", *args)
    assert_one_line_error(proc, code, *fragments)
    assert "cluster up" not in proc.stderr                # nothing was provisioned
    assert not (tmp_path / "out.epc").exists() and not (tmp_path / "out.h5").exists()
    if hasattr(out, "exists") and out.suffix == ".epc" and not out.is_dir():
        assert not out.exists()


def test_debug_shows_the_traceback(work, tmp_path):
    proc = run_resqmp("--debug", "launch", "--profile", "nosuch", "--batch", work / "batch.yaml",
                      "--output", tmp_path / "o.epc")
    assert proc.returncode == ExitCode.PROFILE and "Traceback" in proc.stderr


def test_usage_errors_are_click_usage(work, tmp_path):
    proc = run_resqmp("launch", "--profile", "local", "--batch", work / "batch.yaml", "--output",
                      tmp_path / "o.epc", "--workers", "0")
    assert proc.returncode == ExitCode.USAGE and "Traceback" not in proc.stderr


@pytest.fixture
def mounted(tmp_path):
    """Mount helpers (root in CI and here); everything unmounted afterwards."""
    mounts = []

    def mount(path, *options):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], check=True)
        mounts.append(path)
        return path
    yield mount
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_output_folder_not_writable(work, tmp_path, mounted):
    ro = mounted(tmp_path / "ro", "ro", "size=1m")
    proc = run_resqmp("launch", "--profile", "local", "--batch", work / "batch.yaml", "--output", ro / "o.epc")
    assert_one_line_error(proc, ExitCode.OUTPUT, str(ro), "not writable")
    assert "cluster up" not in proc.stderr


def test_disk_full_during_recombination(work, tmp_path, mounted):
    small = mounted(tmp_path / "small", "size=64k")
    shared = tmp_path / "shared"
    marker = new_marker()
    proc = run_resqmp("launch", "--profile", "local", "--set", f"storage.shared_directory={shared}",
                      "--batch", work / "batch.yaml", "--output", small / "faults.epc", env=marker)
    assert_one_line_error(proc, ExitCode.OUTPUT, str(small / "faults.epc"), "no space left on device")
    assert not (small / "faults.epc").exists()
    assert not list(small.glob(".faults.staging-*"))     # no half-written leftovers
    assert wait_until_gone(marker) == []
    # the finished tasks are kept: with room, the same command resumes without rerunning them
    journal = small / "faults.journal.jsonl"
    assert journal.exists()
    recorded = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert recorded and all(r["success"] for r in recorded)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True)
    proc = run_resqmp("launch", "--profile", "local", "--set", f"storage.shared_directory={shared}",
                      "--batch", work / "batch.yaml", "--output", small / "faults.epc", check=0)
    assert f"resuming: {len(recorded)} of 4" in proc.stderr
    report = json.loads((small / "faults.report.json").read_text())
    assert report["totals"]["succeeded"] == 4 and report["totals"]["resumed"] == len(recorded)
    assert (small / "faults.epc").exists()


@pytest.fixture
def scheduler(tmp_path):
    """A real Dask scheduler started outside resqmp (the external backend connects to it)."""
    sched_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(sched_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    yield json.loads(sched_file.read_text())["address"]
    proc.terminate()
    proc.wait(timeout=30)


def test_no_worker_arrives_within_the_timeout(work, tmp_path, scheduler):
    # The message names the timeout that expired: 3 s, the --set one (the default is 300 s), so
    # the launch gave up on the fast path; no stopwatch needed.
    proc = run_resqmp("launch", "--profile", "external", "--set", f"cluster.address={scheduler}",
                      "--set", "scaling.worker_timeout=3", "--batch", work / "batch.yaml",
                      "--output", tmp_path / "o.epc")
    assert_one_line_error(proc, ExitCode.CLUSTER, "no worker arrived within 3 s")
    assert not (tmp_path / "o.epc").exists()


def test_shared_directory_not_visible_to_workers(work, tmp_path, scheduler):
    """The classic failure: the worker's view of the task folder is node-local. The worker runs in
    its own mount namespace where an empty tmpfs hides the launcher's shared directory."""
    shared = tmp_path / "shared"
    shared.mkdir()
    worker = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs tmpfs {shared} && exec {BIN / 'dask'} worker --nthreads 1 "
                               f"--no-dashboard {scheduler}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = run_resqmp("launch", "--profile", "external", "--set", f"cluster.address={scheduler}",
                          "--set", f"storage.shared_directory={shared}", "--batch", work / "batch.yaml",
                          "--output", tmp_path / "o.epc")
        assert_one_line_error(proc, ExitCode.CLUSTER, f"shared directory {shared}", "cannot read a file the launcher wrote")
        assert not (tmp_path / "o.epc").exists()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
