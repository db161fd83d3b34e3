"""Site-level defects of issue 10: --workers over adaptive scaling, tasks.retries reaching the
scheduler that decides, one expansion rule for the launcher's paths, and Kubernetes/external
configuration errors exiting 4 from `launch` as from `profiles validate`."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, one_error_line, run_resqmp
from k8s_fixtures import helm, helm_template  # noqa: F401 - fixture
from resqmp.errors import ExitCode


def launch(profile, batch, output, *extra, env=None, check=None):
    return run_resqmp("launch", "--profile", profile, "--batch", batch, "--output", output, *extra,
                      env=env, check=check, timeout=300)


# --------------------------------------------------------------------------- --workers N

def test_workers_on_the_command_line_replace_adaptive_scaling_and_say_so(slow, tmp_path):
    """8 tasks of 1 s each: adaptive 1..2 would bring a second worker; --workers 1 is one worker."""
    profile = tmp_path / "adaptive.yaml"
    profile.write_text("extends: local\nscaling:\n  adaptive: {minimum: 1, maximum: 2}\n")
    out = tmp_path / "out.epc"
    proc = launch(profile, slow["batch"], out, "--workers", "1", check=0)
    assert f"--workers 1 replaces the adaptive scaling (1..2 workers) of profile {profile}" in proc.stderr
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert len({t["worker"] for t in report["tasks"]}) == 1


# --------------------------------------------------------------------------- tasks.retries

def test_kubernetes_scheduler_pod_gets_tasks_retries():
    """Operator mode: the DaskCluster's scheduler (in its pod, not the launcher) decides re-runs."""
    out = run_resqmp("profiles", "render", "kubernetes", "--set", "tasks.retries=5", check=0).stdout
    spec = yaml.safe_load(out.split("---\n", 1)[1])
    (scheduler,) = spec["spec"]["scheduler"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in scheduler["env"]}
    assert env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] == "5"


def test_the_charts_standalone_scheduler_gets_tasks_retries(helm):
    objects = helm_template(helm, "batch.file=/shared/b.yaml", "tasks.retries=5")
    (scheduler,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-scheduler")]
    (container,) = scheduler["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] == "5"
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert yaml.safe_load(cm["data"]["profile.yaml"])["tasks"]["retries"] == 5   # and the launcher agrees


@pytest.fixture
def external_cluster(tmp_path):
    """A scheduler (distributed's default allowed-failures, 3) and a worker started outside resqmp."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    address = json.loads(sched_file.read_text())["address"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    procs.append(subprocess.Popen([str(BIN / "dask"), "worker", "--nthreads", "1", "--no-dashboard", address],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    yield address
    for proc in reversed(procs):
        proc.terminate()
        proc.wait(timeout=30)


def test_external_scheduler_retries_it_cannot_set_are_a_warning(work, tmp_path, external_cluster):
    proc = launch("external", work / "batch.yaml", tmp_path / "o.epc", "--set", f"cluster.address={external_cluster}",
                  "--set", "tasks.retries=1", check=0)
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("resqmp: warning: ")]
    assert warnings == ["resqmp: warning: tasks.retries is 1, but the external scheduler re-runs a task whose "
                        "worker died 3 times; resqmp cannot change that: start it with "
                        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=1"], proc.stderr
    # the scheduler's own value: no warning
    proc = launch("external", work / "batch.yaml", tmp_path / "o2.epc", "--set", f"cluster.address={external_cluster}",
                  "--set", "tasks.retries=3", check=0)
    assert "warning" not in proc.stderr


# --------------------------------------------------------------------------- one expansion rule

def _without(*names) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}


def test_without_user_every_launcher_path_uses_the_account_name(work, tmp_path):
    """$USER unset (batch and container environments): task files, TLS files and job logs all go
    where a login shell's $USER would put them, never to a literal ${USER} folder."""
    account = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    profile = tmp_path / "p.yaml"
    profile.write_text(textwrap.dedent(f"""\
        extends: local
        storage: {{shared_directory: "{tmp_path}/${{USER}}/tasks", keep_task_files: true}}
        """))
    launch(profile, work / "batch.yaml", tmp_path / "o.epc", env=_without("USER", "LOGNAME"), check=0)
    assert (tmp_path / account / "tasks").is_dir() and not (tmp_path / "${USER}").exists()
    assert any((tmp_path / account / "tasks").glob("resqmp-*"))
    # the batch-scheduler paths follow the same rule
    script = run_resqmp("profiles", "render", "slurm", "--set", f"storage.shared_directory={tmp_path}/$USER/s",
                        env=_without("USER", "LOGNAME"), check=0).stdout
    assert f"--tls-key {tmp_path}/{account}/s/.resqmp-tls-" in script
    assert f"#SBATCH -o {tmp_path}/{account}/s/logs/" in script


@pytest.mark.parametrize("command", ["launch", "render"])
def test_a_variable_that_is_not_set_is_one_error(command, work, tmp_path):
    args = ("--set", f"storage.shared_directory={tmp_path}/${{RESQMP_NO_SUCH_VAR}}/tasks")
    if command == "launch":
        proc = launch("local", work / "batch.yaml", tmp_path / "o.epc", *args, env=_without("RESQMP_NO_SUCH_VAR"))
    else:
        proc = run_resqmp("profiles", "render", "slurm", *args, env=_without("RESQMP_NO_SUCH_VAR"))
    line = one_error_line(proc, ExitCode.PROFILE)
    assert "storage.shared_directory" in line and "$RESQMP_NO_SUCH_VAR is not set" in line
    assert not list(tmp_path.glob("$*")) and not (tmp_path / "o.epc").exists()


# --------------------------------------------------------------------------- profile errors: exit 4

@pytest.mark.parametrize("profile, item, says", [
    ("external", "cluster.address=tcp://a b:1", "expected PROTOCOL://HOST:PORT"),
    ("kubernetes", "cluster.name=Not_Valid_{uuid}", "is invalid"),
    ("kubernetes", "cluster.name=x-{nobody}", "unknown placeholder"),
])
def test_kubernetes_and_external_configuration_errors_exit_4_from_launch(profile, item, says, work, tmp_path):
    proc = launch(profile, work / "batch.yaml", tmp_path / "o.epc", "--set", item,
                  "--set", f"storage.shared_directory={tmp_path}/shared")
    assert says in one_error_line(proc, ExitCode.PROFILE)
    assert not (tmp_path / "shared").exists() and not (tmp_path / "o.epc").exists()   # nothing started
    bad = tmp_path / "bad.yaml"
    key, value = item.split("=", 1)
    bad.write_text(f"extends: {profile}\ncluster:\n  {key.split('.', 1)[1]}: '{value}'\n")
    proc = run_resqmp("profiles", "validate", bad)
    assert proc.returncode == ExitCode.PROFILE and says in proc.stderr
