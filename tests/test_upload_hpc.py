"""Your own wrapper code on real SLURM and SGE worker jobs (ci/slurm/start.sh, ci/sge/start.sh):
a module that exists only in the batch's folder, worker jobs started in another folder, adaptive
scaling that adds a worker after the upload was registered. Hold /tmp/resqmp-heavy.lock."""
from __future__ import annotations

import os

import pytest
import yaml

from conftest import TESTS, run_resqmp
from hpc_fixtures import PROFILES, SGE_ENV, report_of, scheduler_jobs, sh, unique, wait_until
from resqmp.errors import ExitCode
from user_project import ALLOW_USER_WRAPPERS, markers, module_source, write_project

pytestmark = pytest.mark.timeout(600)

UPLOAD_FOLDER = f"{os.sep}resqmp-upload{os.sep}"
#: a job directive that starts the worker job in another folder
CHDIR = {"slurm": "--chdir={}", "sge": "-wd {}"}
LISTING = {"slurm": ("squeue",), "sge": ("qstat", "-u", "*")}


@pytest.fixture(params=[pytest.param("slurm", marks=pytest.mark.slurm),
                        pytest.param("sge", marks=pytest.mark.sge)])
def scheduler(request) -> str:
    request.getfixturevalue(request.param)          # the session fixture that starts it
    return request.param


def _profile(folder, scheduler: str, job_name: str, jobs_cwd, **scaling):
    """The CI profile of the scheduler, worker jobs named job_name and started in jobs_cwd."""
    path = folder / f"{scheduler}-upload.yaml"
    path.write_text(yaml.safe_dump({
        "extends": str(PROFILES[scheduler]),
        "cluster": {"job_name": job_name, "job_extra_directives": [CHDIR[scheduler].format(jobs_cwd)]},
        "scaling": {"worker_timeout": 120, **scaling}}))
    return path


def _launch(*args, cwd, env=None):
    return run_resqmp("launch", *args, *ALLOW_USER_WRAPPERS, cwd=cwd, env={**SGE_ENV, **(env or {})}, timeout=500)


def test_an_uploaded_module_reaches_worker_jobs_started_elsewhere_and_a_late_joiner(scheduler, hpc_example,
                                                                                     hpc_workdir):
    """Adaptive scaling between 1 and 2 workers. Every task waits until tasks ran on two workers,
    so the second worker job (started by adaptive scaling once the first worker's task runs long,
    after the upload was registered) must join and run tasks of the uploaded wrapper."""
    folder = hpc_workdir / f"upload-{scheduler}"
    jobs_cwd = folder / "jobs-cwd"          # neither the batch's folder nor the launcher's
    jobs_cwd.mkdir(parents=True)
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    project = folder / "project"
    batch = write_project(project, hpc_example, wait_for_workers=2)
    name = unique("u")
    profile = _profile(folder, scheduler, name, jobs_cwd, adaptive={"minimum": 1, "maximum": 2})
    out = folder / "out" / "faults.epc"
    out.parent.mkdir()
    proc = _launch("--profile", profile, "--batch", batch, "--output", out, "--upload", project / "my_wrappers.py",
                   cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = report_of(out)
    assert [t["success"] for t in report["tasks"]] == [True] * 4
    workers = {t["worker"] for t in report["tasks"]}
    assert len(workers) == 2, workers
    late = workers - {report["first_worker"]}
    assert len(late) == 1, (report["first_worker"], workers)     # joined after preflight and the upload
    ran = markers(project)
    assert {r["worker"] for r in ran} == workers
    assert any(r["worker"] in late for r in ran)
    for record in ran:
        # the worker job's own copy, in a job that started in jobs_cwd, not in the batch's folder
        assert UPLOAD_FOLDER in record["file"] and not record["file"].startswith(str(project)), record
        assert record["cwd"] == str(jobs_cwd), record
    assert report["uploads"][0]["path"] == str(project / "my_wrappers.py")
    assert wait_until(lambda: not scheduler_jobs(scheduler, name), 60), sh(*LISTING[scheduler]).stdout


def test_a_wrapper_that_does_not_import_on_worker_jobs_fails_preflight_naming_the_worker(scheduler, hpc_example,
                                                                                         hpc_workdir):
    """The module imports a package the login node has (the launcher's PYTHONPATH) and the worker
    jobs have not (the profile gives them another PYTHONPATH): exit 7 before any task."""
    folder = hpc_workdir / f"upload-missing-{scheduler}"
    (folder / "site").mkdir(parents=True)
    (folder / "site" / "login_node_only.py").write_text("ANSWER = 42\n")
    jobs_cwd = folder / "jobs-cwd"
    jobs_cwd.mkdir()
    project = folder / "project"
    batch = write_project(project, hpc_example, module=module_source(imports="import login_node_only"))
    name = unique("m")
    profile = _profile(folder, scheduler, name, jobs_cwd, workers=1)
    out = folder / "out" / "faults.epc"
    out.parent.mkdir()
    proc = _launch("--profile", profile, "--batch", batch, "--output", out, "--upload", project / "my_wrappers.py",
                   "--set", f"environment.PYTHONPATH={TESTS}", cwd=folder,
                   env={"PYTHONPATH": f"{folder / 'site'}{os.pathsep}{TESTS}"})
    assert proc.returncode == ExitCode.CLUSTER, proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("resqmp: error:")]
    assert "wrapper my_wrappers:find_faces_ijk: does not import on worker tls://" in line, line
    assert "No module named 'login_node_only'" in line, line
    assert not (project / "marks").exists() and not out.exists()
    assert wait_until(lambda: not scheduler_jobs(scheduler, name), 60), sh(*LISTING[scheduler]).stdout
