"""Your own wrapper code on every worker (`launch --upload PATH`, the profile's tasks.upload), on
real LocalClusters: started by `resqmp launch` (local profile) and started here for the external
backend, where workers outlive a run. The user's module lives beside the batch in a folder that is
on no PYTHONPATH (tests/user_project.py); `resqmp` runs from another folder. The SLURM/SGE runs
are in test_upload_hpc.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BIN, TESTS, run_resqmp
from hpc_fixtures import wait_until
from resqmp.errors import ExitCode
from user_project import ALLOW_USER_WRAPPERS, markers, module_source, write_project

pytestmark = pytest.mark.timeout(600)

UPLOAD_FOLDER = f"{os.sep}resqmp-upload{os.sep}"


def launch(*args, cwd, check=None, env=None, allow=True):
    """`resqmp launch ARGS`, the user's wrappers allowed unless allow=False."""
    return run_resqmp("launch", *map(str, args), *(ALLOW_USER_WRAPPERS if allow else ()), cwd=cwd, check=check,
                      env=env)


def _report(output: Path) -> dict:
    return json.loads(output.with_suffix(".report.json").read_text())


def _error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("resqmp: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture
def elsewhere(tmp_path):
    """The folder `resqmp` runs from: not the batch's."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def test_a_module_beside_the_batch_runs_on_the_workers_when_uploaded(example, tmp_path, elsewhere):
    project = tmp_path / "project"
    batch = write_project(project, example)
    out = tmp_path / "out" / "faults.epc"
    out.parent.mkdir()
    # not uploaded: the launcher cannot import it, and says what to do
    proc = launch("--profile", "local", "--batch", batch, "--output", out, cwd=elsewhere)
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    line = _error_line(proc)
    assert "my_wrappers" in line and "--upload" in line
    # uploaded (a path relative to the current folder)
    rel = os.path.relpath(project / "my_wrappers.py", elsewhere)
    proc = launch("--profile", "local", "--batch", batch, "--output", out, "--upload", rel, cwd=elsewhere,
                  check=0)
    report = _report(out)
    assert [t["success"] for t in report["tasks"]] == [True] * 4
    (entry,) = report["uploads"]
    assert entry["path"] == str(project / "my_wrappers.py") and entry["module"] == "my_wrappers"
    assert entry["kind"] == "module" and len(entry["sha256"]) == 64
    ran = markers(project)
    assert len(ran) == 4
    for record in ran:      # the workers' own copy, not the batch folder's file
        assert UPLOAD_FOLDER in record["file"] and record["file"].endswith("/my_wrappers.py"), record
        assert not record["file"].startswith(str(project))
    assert {r["worker"] for r in ran} == {t["worker"] for t in report["tasks"]}


def test_an_uploaded_wrapper_must_still_be_allowed(example, tmp_path, elsewhere):
    """Uploading code ships it; it does not let a batch run it: exit 5 saying how to allow it,
    before any cluster starts and before the module is imported (it would leave a marker)."""
    project = tmp_path / "project"
    batch = write_project(project, example, module=module_source(
        extra="EXTRA = open(os.path.join(os.path.dirname(__file__), 'imported'), 'w').close()", imports="import os"))
    out = tmp_path / "out" / "faults.epc"
    out.parent.mkdir()
    proc = launch("--profile", "local", "--batch", batch, "--output", out, "--upload", project / "my_wrappers.py",
                  cwd=elsewhere, allow=False)
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    line = _error_line(proc)
    assert "my_wrappers:find_faces_ijk" in line and "--allow-wrapper" in line, line
    assert not (project / "imported").exists()
    _assert_nothing_started(proc, out.parent)


def _write_package(folder: Path) -> Path:
    """faces_pkg: the wrapper in a submodule, data read beside its code."""
    pkg = folder / "faces_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from faces_pkg.core import find_faces_ijk  # noqa: F401\n")
    (pkg / "data" / "answer.txt").write_text("42\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"not shipped")
    (pkg / "core.py").write_text(module_source(
        version="pkg", extra="EXTRA = open(os.path.join(os.path.dirname(__file__), 'data', 'answer.txt')).read().strip()",
        imports="import os"))
    return pkg


def test_a_package_folder_named_by_a_profile_elsewhere_runs_on_local(example, tmp_path, elsewhere):
    """tasks.upload in a profile file: a relative path is relative to that file's folder, wherever
    resqmp runs from; a package ships whole (submodules, data files), caches excluded."""
    project = tmp_path / "project"
    pkg = _write_package(tmp_path / "code")
    batch = write_project(project, example, wrapper="faces_pkg.core:find_faces_ijk", module=False)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    profile = profiles / "mine.yaml"
    profile.write_text(yaml.safe_dump({"extends": "local", "tasks": {"upload": ["../code/faces_pkg"]}}))
    out = tmp_path / "out.epc"
    launch("--profile", profile, "--batch", batch, "--output", out, cwd=elsewhere, check=0)
    report = _report(out)
    assert [t["success"] for t in report["tasks"]] == [True] * 4
    assert report["uploads"][0]["path"] == str(pkg) and report["uploads"][0]["kind"] == "package"
    ran = markers(project)
    assert len(ran) == 4 and all(r["extra"] == "42" and r["version"] == "pkg" for r in ran), ran
    assert all(UPLOAD_FOLDER in r["file"] and r["file"].endswith("/faces_pkg/core.py") for r in ran), ran
    shown = run_resqmp("profiles", "show", profile, check=0).stdout
    assert str(pkg) in shown


BAD_UPLOADS = {
    # name: (how to make it in folder, what the error says)
    "missing": (lambda d: d / "nope.py", "not found"),
    "not python": (lambda d: _touch(d / "notes.txt"), "not a .py file or a package folder"),
    "folder without __init__": (lambda d: _mkdir(d / "loose"), "no __init__.py"),
    "unreadable file in package": (lambda d: _dangling(d / "pkgx"), "cannot read"),
    "not an identifier": (lambda d: _touch(d / "my-wrappers.py"), "cannot be imported"),
    "stdlib name": (lambda d: _touch(d / "json.py"), "standard library"),
    "resqpy": (lambda d: _package(d / "resqpy"), "resqpy"),
    "installed package": (lambda d: _touch(d / "numpy.py"), "would shadow the module at"),
}


def _touch(path: Path) -> Path:
    path.write_text("x = 1\n")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    (path / "a.py").write_text("x = 1\n")
    return path


def _package(path: Path) -> Path:
    path.mkdir()
    (path / "__init__.py").write_text("x = 1\n")
    return path


def _dangling(path: Path) -> Path:
    _package(path)
    (path / "gone.py").symlink_to(path / "does-not-exist.py")
    return path


def _assert_nothing_started(proc, folder: Path) -> None:
    assert "cluster up" not in proc.stderr           # nothing was provisioned
    assert sorted(os.listdir(folder)) == []          # nothing written: no output, journal or task folder


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_a_bad_upload_fails_before_any_cluster_starts(case, example, tmp_path, elsewhere):
    make, says = BAD_UPLOADS[case]
    bad = make(tmp_path)
    batch = write_project(tmp_path / "project", example)
    out = tmp_path / "out" / "faults.epc"
    out.parent.mkdir()
    proc = launch("--profile", "local", "--batch", batch, "--output", out, "--upload", bad, cwd=elsewhere)
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    line = _error_line(proc)
    assert f"--upload {bad}" in line and says in line, line
    _assert_nothing_started(proc, out.parent)


@pytest.mark.parametrize("case", ["missing", "unreadable file in package", "stdlib name"])
def test_a_bad_upload_in_a_profile_is_a_profile_error(case, example, tmp_path, elsewhere):
    make, says = BAD_UPLOADS[case]
    bad = make(tmp_path)
    batch = write_project(tmp_path / "project", example)
    out = tmp_path / "out" / "faults.epc"
    out.parent.mkdir()
    profile = tmp_path / "bad.yaml"
    profile.write_text(yaml.safe_dump({"extends": "local", "tasks": {"upload": [str(bad)]}}))
    proc = launch("--profile", profile, "--batch", batch, "--output", out, cwd=elsewhere)
    assert proc.returncode == ExitCode.PROFILE, proc.stderr
    line = _error_line(proc)
    assert f"profile {profile}: tasks.upload {bad}" in line and says in line, line
    _assert_nothing_started(proc, out.parent)


def test_two_uploads_of_one_name_are_refused(example, tmp_path, elsewhere):
    batch = write_project(tmp_path / "project", example)
    other = tmp_path / "other"
    other.mkdir()
    (other / "my_wrappers.py").write_text(module_source("other"))
    out = tmp_path / "out.epc"
    proc = launch("--profile", "local", "--batch", batch, "--output", out,
                  "--upload", tmp_path / "project" / "my_wrappers.py", "--upload", other / "my_wrappers.py",
                  cwd=elsewhere)
    assert proc.returncode == ExitCode.BATCH
    assert "a module named 'my_wrappers' is uploaded from" in _error_line(proc)
    # the same file twice is one upload
    launch("--profile", "local", "--batch", batch, "--output", out, "--upload",
           tmp_path / "project" / "my_wrappers.py", "--upload", tmp_path / "project" / "my_wrappers.py",
           cwd=elsewhere, check=0)


# ---- an external scheduler: workers outlive the runs --------------------------------------------

@pytest.fixture
def external(tmp_path):
    """A scheduler with one single-threaded worker process, started here; `resqmp launch` connects
    to it through the external backend. Yields (profile path, client)."""
    from distributed import Client, LocalCluster
    shared = tmp_path / "shared"
    shared.mkdir()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        profile = tmp_path / "external.yaml"
        profile.write_text(yaml.safe_dump({
            "extends": "external", "cluster": {"address": cluster.scheduler_address},
            "scaling": {"worker_timeout": 60}, "storage": {"shared_directory": str(shared)}}))
        yield profile, client


def _worker_state(dask_worker=None):
    """Run on a worker: what uploads left in its interpreter and scratch folder."""
    from resqmp import upload
    folder = os.path.join(dask_worker.local_directory, upload.WORKER_FOLDER)
    return {"modules": sorted(m for m in sys.modules if m.split(".")[0] in ("my_wrappers", "faces_pkg")),
            "path": [p for p in sys.path if upload.WORKER_FOLDER in p],
            "files": sorted(os.listdir(folder)) if os.path.isdir(folder) else [],
            "active": sorted(upload._ACTIVE)}


def _executed_here(dask_worker=None) -> int:
    return dask_worker.state.executed_count


def _executed(client, workers) -> int:
    return sum(client.run(_executed_here, workers=list(workers)).values())


def _clients(dask_scheduler=None) -> list[str]:
    return list(dask_scheduler.clients)


def _clean(state: dict) -> bool:
    return not (state["modules"] or state["path"] or state["files"] or state["active"])


def test_a_module_changed_between_runs_on_the_same_workers_runs_its_new_version(example, tmp_path, elsewhere,
                                                                                  external):
    profile, client = external
    project = tmp_path / "project"
    batch = write_project(project, example, module=module_source("1"))
    out = tmp_path / "out.epc"
    upload = project / "my_wrappers.py"
    launch("--profile", profile, "--batch", batch, "--output", out, "--upload", upload, cwd=elsewhere, check=0)
    assert {r["version"] for r in markers(project)} == {"1"}
    # the run took its upload with it: module, sys.path entry and files are gone from the worker
    assert all(_clean(s) for s in client.run(_worker_state).values()), client.run(_worker_state)
    upload.write_text(module_source("2"))
    launch("--profile", profile, "--batch", batch, "--output", out, "--upload", upload, cwd=elsewhere, check=0)
    ran = markers(project)
    assert len(ran) == 4 and {r["version"] for r in ran} == {"2"}, ran
    assert all(_clean(s) for s in client.run(_worker_state).values())


def _start(args, cwd) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([str(BIN / "resqmp"), "launch", *map(str, args), *ALLOW_USER_WRAPPERS], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_run_with_another_version_of_a_module_in_use_is_refused(example, tmp_path, elsewhere, external):
    """One worker process holds one version of a module: while run A's tasks use my_wrappers v1,
    run B's v2 is refused (exit 7, naming the worker), and A finishes with v1."""
    profile, _ = external
    a, b = tmp_path / "a", tmp_path / "b"
    hold = tmp_path / "release-a"
    batch_a = write_project(a, example, module=module_source("1"), hold_file=str(hold))
    batch_b = write_project(b, example, module=module_source("2"))
    run_a = _start(["--profile", profile, "--batch", batch_a, "--output", a / "out.epc",
                    "--upload", a / "my_wrappers.py"], elsewhere)
    try:
        assert wait_until(lambda: markers(a) or run_a.poll() is not None, 240) and run_a.poll() is None, \
            run_a.communicate()
        proc = launch("--profile", profile, "--batch", batch_b, "--output", b / "out.epc",
                      "--upload", b / "my_wrappers.py", cwd=elsewhere)
        assert proc.returncode == ExitCode.CLUSTER, proc.stderr
        line = _error_line(proc)
        assert "worker tcp://127.0.0.1:" in line and "another resqmp run on this worker uses a different my_wrappers" in line
        assert not (b / "marks").exists()
        hold.touch()
        stdout, stderr = run_a.communicate(timeout=300)
    finally:
        hold.touch()
        if run_a.poll() is None:
            run_a.kill()
    assert run_a.returncode == 0, stderr
    assert {r["version"] for r in markers(a)} == {"1"} and len(markers(a)) == 4


def test_an_upload_left_by_a_killed_launcher_does_not_block_the_next_run(example, tmp_path, elsewhere, external):
    profile, client = external
    a, b = tmp_path / "a", tmp_path / "b"
    hold = tmp_path / "release-a"
    batch_a = write_project(a, example, module=module_source("1"), hold_file=str(hold))
    batch_b = write_project(b, example, module=module_source("2"))
    run_a = _start(["--profile", profile, "--batch", batch_a, "--output", a / "out.epc",
                    "--upload", a / "my_wrappers.py"], elsewhere)
    try:
        assert wait_until(lambda: markers(a) or run_a.poll() is not None, 240) and run_a.poll() is None
        run_a.send_signal(signal.SIGKILL)          # no teardown: its plugin stays on the scheduler
        run_a.communicate(timeout=60)
    finally:
        hold.touch()                               # its task, still on the worker, may finish
    # the scheduler has seen the launcher go: only this test's client is left (and fire-and-forget)
    assert wait_until(lambda: len(client.run_on_scheduler(_clients)) == 2, 120), client.run_on_scheduler(_clients)
    assert any(s["active"] == ["my_wrappers"] for s in client.run(_worker_state).values())
    launch("--profile", profile, "--batch", batch_b, "--output", b / "out.epc", "--upload", b / "my_wrappers.py",
           cwd=elsewhere, check=0)
    assert {r["version"] for r in markers(b)} == {"2"} and len(markers(b)) == 4
    assert all(_clean(s) for s in client.run(_worker_state).values())


def test_an_upload_that_would_shadow_a_module_on_the_workers_is_refused_there(example, tmp_path, elsewhere):
    """The workers (not the launcher) can import another my_wrappers: the upload would hide it,
    so the worker refuses it and the launch stops with exit 7 naming the worker."""
    from distributed import LocalCluster
    theirs = tmp_path / "worker-site"
    theirs.mkdir()
    (theirs / "my_wrappers.py").write_text("SOMETHING_ELSE = True\n")
    project = tmp_path / "project"
    batch = write_project(project, example)
    sys.path.insert(0, str(theirs))          # worker processes start with the parent's sys.path
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster:
            profile = tmp_path / "external.yaml"
            profile.write_text(yaml.safe_dump({
                "extends": "external", "cluster": {"address": cluster.scheduler_address},
                "scaling": {"worker_timeout": 60}, "storage": {"shared_directory": str(tmp_path)}}))
            proc = launch("--profile", profile, "--batch", batch, "--output", tmp_path / "out.epc",
                          "--upload", project / "my_wrappers.py", cwd=elsewhere)
    finally:
        sys.path.remove(str(theirs))
    assert proc.returncode == ExitCode.CLUSTER, proc.stderr
    line = _error_line(proc)
    assert "worker tcp://127.0.0.1:" in line and f"would shadow the module at {theirs / 'my_wrappers.py'}" in line, line
    assert not (project / "marks").exists()


def test_a_wrapper_that_does_not_import_on_the_workers_fails_preflight_naming_the_worker(example, tmp_path,
                                                                                           elsewhere, external):
    """The module imports a package the launcher has (on its PYTHONPATH) but the workers do not,
    as with a package installed on a login node only: exit 7 before any task, naming the worker
    and the import error. (Local workers start with the launcher's own sys.path.)"""
    profile, _ = external
    site = tmp_path / "launcher-site"
    site.mkdir()
    (site / "launcher_only_helper.py").write_text("ANSWER = 42\n")
    project = tmp_path / "project"
    batch = write_project(project, example, module=module_source(imports="import launcher_only_helper"))
    out = tmp_path / "out" / "faults.epc"
    out.parent.mkdir()
    proc = launch("--profile", profile, "--batch", batch, "--output", out, "--upload", project / "my_wrappers.py",
                  cwd=elsewhere, env={"PYTHONPATH": f"{site}{os.pathsep}{TESTS}"})
    assert proc.returncode == ExitCode.CLUSTER, proc.stdout + proc.stderr
    line = _error_line(proc)
    assert "wrapper my_wrappers:find_faces_ijk: does not import on worker tcp://127.0.0.1:" in line, line
    assert "No module named 'launcher_only_helper'" in line, line
    assert not (project / "marks").exists()       # no task ran
    assert not out.exists()


def test_a_late_worker_that_refuses_the_upload_fails_its_tasks_instead_of_running_another_module(
        example, tmp_path, elsewhere, external):
    """A worker joins after preflight, and on it the upload would shadow another my_wrappers (one
    whose find_faces_ijk would "succeed"): its tasks fail, naming the refusal; none runs the
    other module."""
    profile, client = external
    theirs = tmp_path / "worker-site"
    theirs.mkdir()
    (theirs / "my_wrappers.py").write_text(
        "def find_faces_ijk(index, parent_tmp_dir, **kwargs):\n"
        "    open(kwargs['log_dir'] + '/IMPOSTOR-' + str(index), 'w').close()\n"
        "    return index, True, None, []\n")
    project = tmp_path / "project"
    hold = tmp_path / "release"
    batch = write_project(project, example, hold_file=str(hold))
    run = _start(["--profile", profile, "--batch", batch, "--output", tmp_path / "out.epc",
                  "--upload", project / "my_wrappers.py", "--set", "tasks.group_size=1"], elsewhere)
    cluster = client.cluster
    try:
        # the first task runs (held) on the first worker: preflight is over
        assert wait_until(lambda: markers(project) or run.poll() is not None, 240) and run.poll() is None
        sys.path.insert(0, str(theirs))      # the next worker process starts with this sys.path
        try:
            cluster.scale(2)
            client.wait_for_workers(2, timeout=120)
        finally:
            sys.path.remove(str(theirs))
        late = set(client.scheduler_info()["workers"]) - {markers(project)[0]["worker"]}
        # the late worker takes queued tasks while the first is held; then release the first
        assert wait_until(lambda: _executed(client, late) >= 1, 120), client.run(_executed_here)
        hold.touch()
        stdout, stderr = run.communicate(timeout=300)
    finally:
        hold.touch()
        if run.poll() is None:
            run.kill()
    report = _report(tmp_path / "out.epc")
    on_late = [t for t in report["tasks"] if t["worker"] in late]
    assert on_late, report["tasks"]                           # the late worker did take tasks
    for task in on_late:
        assert not task["success"], task
        assert "the upload of my_wrappers was refused on this worker" in task["error"], task
        assert "would shadow the module at" in task["error"], task
    assert not list((project / "marks").glob("IMPOSTOR-*"))
    assert run.returncode == ExitCode.TASKS_FAILED, stderr
