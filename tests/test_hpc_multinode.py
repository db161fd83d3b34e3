"""Workers on other hosts, on the two-node SLURM of ci/slurm/start-multinode.sh: compute nodes
rqmn-c1 and rqmn-c2 with their own hostname, network address and /tmp, the launcher (this process's
`resqmp launch`) on the controller's host. Proves that workers reach the scheduler over TLS on the
profile's interface, that the shared directory is seen from every node, that a worker job cancelled
mid-batch costs nothing, and that a shared directory some node does not share is refused before any
task runs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from conftest import ALLOW_TEST_WRAPPERS
from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from resqmp.errors import ExitCode

PROFILE = PROFILES["slurm-multinode"]
pytestmark = [pytest.mark.slurm_multinode, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def mn_workdir(slurm_multinode):
    """A folder for this module under the two-node cluster's shared directory (seen by every node)."""
    path = Path(tempfile.mkdtemp(prefix=f"pytest-{os.getpid()}-", dir=MN_SHARED))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def mn_example(mn_workdir):
    """The same model as hpc_example (write_example is deterministic), where the nodes see it: the
    runs here must match local_reference."""
    from resqmp.example import write_example
    return write_example(mn_workdir / "example", surfaces=4)


def mn_jobs(job_name: str) -> dict[str, str]:
    """job id -> node, for this cluster's jobs named job_name that are still listed."""
    out = sh("squeue", "-h", "-n", job_name, "-o", "%i %t %N", env=MN_ENV).stdout
    return {f[0]: (f[2] if len(f) > 2 else "") for f in (ln.split() for ln in out.splitlines()) if f}


def running_on(job_name: str) -> dict[str, str]:
    """job id -> node, for jobs named job_name in state RUNNING."""
    out = sh("squeue", "-h", "-n", job_name, "-t", "RUNNING", "-o", "%i %N", env=MN_ENV).stdout
    return dict(ln.split() for ln in out.splitlines() if len(ln.split()) == 2)


def host_of(address: str | None) -> str:
    return (address or "").split("://")[-1].rsplit(":", 1)[0]


def worker_address(log_dir: Path, job_name: str, job_id: str) -> str:
    text = (log_dir / f"{job_name}-{job_id}.err").read_text(errors="replace")
    return re.search(r"Start worker at:\s+(\S+)", text).group(1)


def calls_in(log_dir: Path) -> Counter:
    """task index -> times its wrapper was called (tests' log_call files INDEX.PID.NS)."""
    return Counter(int(p.name.split(".")[0]) for p in log_dir.iterdir())


def job_of_process(pid: int) -> str | None:
    """The SLURM job a live process belongs to (its environment says), None once it is gone."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"SLURM_JOB_ID=")), None)


def start_launch(profile, batch, output, *extra) -> subprocess.Popen:
    """`resqmp launch` in the background, as launch() runs it, with this cluster's SLURM_CONF."""
    env = {**os.environ, **MN_ENV, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([str(BIN / "resqmp"), "launch", "--profile", str(profile), "--batch", str(batch),
                             "--output", str(output), *map(str, extra), *ALLOW_TEST_WRAPPERS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"launch still running after {timeout} s\n{out}\n{err}") from None


def run_options(folder: Path, job_name: str) -> list[str]:
    return ["--set", f"cluster.job_name={job_name}", "--set", f"cluster.log_directory={folder / 'logs'}",
            "--set", f"environment.PYTHONPATH={TESTS}"]


def test_a_batch_runs_on_workers_on_both_nodes(slurm_multinode, mn_example, mn_workdir, local_reference):
    folder = mn_workdir / "both"
    name = unique("rqmn-both-")
    # a few seconds per task: both workers are busy when the tasks are handed out
    batch = slow_batch(mn_example, "both", delay=2.0)
    out = folder / "faults.epc"
    folder.mkdir()
    launch(PROFILE, batch, out, *run_options(folder, name), env=MN_ENV, check=0, timeout=240)
    report = report_of(out)
    assert len(report["tasks"]) == 4 and all(t["success"] for t in report["tasks"])
    # each node has its own address on the cluster network: the workers' addresses name the nodes
    assert {host_of(t["worker"]) for t in report["tasks"]} == set(MN_NODES.values()), report["tasks"]
    assert host_of(report["first_worker"]) in MN_NODES.values()
    assert_same_model(out, local_reference)
    # both worker jobs registered with the launcher's scheduler on the cluster network, over TLS
    registered = registered_worker_jobs("slurm", name, folder / "logs")
    assert len(registered) == 2 and all(a.startswith("tls://10.211.77.1:") for a in registered.values()), registered
    assert wait_until(lambda: not mn_jobs(name), 30), mn_jobs(name)


def test_a_worker_job_cancelled_mid_batch_loses_nothing(slurm_multinode, mn_example, mn_workdir, local_reference):
    folder = mn_workdir / "cancel"
    calls = folder / "calls"
    calls.mkdir(parents=True)
    name = unique("rqmn-cancel-")
    # each call is logged (INDEX.PID.NS) before the work, then the task lasts several seconds
    batch = slow_batch(mn_example, "cancel", delay=6.0, log_dir=str(calls))
    out = folder / "faults.epc"
    proc = start_launch(PROFILE, batch, out, *run_options(folder, name))
    try:
        def task_running_in_a_job():
            """(job id, task index) of a task whose worker process is alive in one of our jobs."""
            jobs = mn_jobs(name)
            for p in calls.iterdir():
                index, pid = (int(x) for x in p.name.split(".")[:2])
                job = job_of_process(pid)
                if job in jobs:
                    return job, index
            return None

        found = wait_until(task_running_in_a_job, 180)
        assert found, (mn_jobs(name), list(calls.iterdir()), proc.poll())
        victim, _ = found
        victim_worker = worker_address(folder / "logs", name, victim)
        sh("scancel", victim, env=MN_ENV, check=True)
        stdout, stderr = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    report = report_of(out)
    tasks = report["tasks"]
    assert len(tasks) == 4 and all(t["success"] for t in tasks), tasks
    assert_same_model(out, local_reference)
    # the task that ran in the cancelled job ran again elsewhere, and the report says so
    called_twice = {i for i, n in calls_in(calls).items() if n > 1}
    retried = {t["index"] for t in tasks if t["attempts"] > 1}
    assert called_twice and called_twice <= retried, (calls_in(calls), tasks)
    for t in tasks:
        if t["index"] in retried:
            assert t["attempts"] == 2 and t["lost_workers"] == [victim_worker], t
            assert t["worker"] != victim_worker
        else:
            assert t["attempts"] == 1 and not t["lost_workers"], t
    assert wait_until(lambda: not mn_jobs(name), 30), mn_jobs(name)


def _node_local_profile(folder: Path, storage: Path) -> Path:
    """The CI profile with storage.shared_directory at `storage`; TLS files and job logs stay on
    the shared directory so the workers can join (a site that got only the task folder wrong)."""
    profile = folder / "profile.yaml"
    profile.write_text(textwrap.dedent(f"""\
        extends: {PROFILE}
        cluster:
          shared_temp_directory: {MN_SHARED}
        storage:
          shared_directory: {storage}
        """))
    return profile


def test_a_shared_directory_on_node_local_tmp_is_refused_naming_every_node(slurm_multinode, mn_example, mn_workdir):
    """The classic mistake: /tmp exists on the launcher, but on each node /tmp is its own."""
    folder = mn_workdir / "tmp-local"
    calls = folder / "calls"
    calls.mkdir(parents=True)
    name = unique("rqmn-local-")
    storage = Path(tempfile.mkdtemp(prefix="resqmp-node-local-", dir="/tmp"))
    try:
        batch = slow_batch(mn_example, "tmp-local", delay=0.1, log_dir=str(calls))
        out = folder / "faults.epc"
        proc = launch(_node_local_profile(folder, storage), batch, out, *run_options(folder, name), env=MN_ENV)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    assert proc.returncode == ExitCode.CLUSTER, proc.stdout + proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("resqmp: error: shared directory "), proc.stderr
    # every node that runs a worker is named, with the reason
    for node in MN_NODES:
        assert re.search(rf"{node} \(worker tls://[\d.]+:\d+\): cannot read a file the launcher wrote", message), message
    assert "not node-local /tmp" in message
    assert not list(calls.iterdir())              # refused before any task ran
    assert not out.exists() and not out.with_suffix(".report.json").exists()
    assert wait_until(lambda: not mn_jobs(name), 30), mn_jobs(name)


def test_a_node_that_does_not_share_the_directory_is_caught_though_another_does(slurm_multinode, mn_example,
                                                                                 mn_workdir):
    """rqmn-c2 has its own empty tmpfs over the task folder (its shared filesystem "not mounted"),
    and its worker is held back until rqmn-c1's has joined: the launcher must not send tasks to
    the first, healthy node before it has checked the second."""
    folder = mn_workdir / "one-node"
    calls = folder / "calls"
    calls.mkdir(parents=True)
    storage = folder / "tasks"
    storage.mkdir()
    name = unique("rqmn-one-")
    c2_mounts = f"/proc/{mn_node_pid('rqmn-c2')}/ns/mnt"     # rqmn-c2's mount namespace
    sh("nsenter", f"--mount={c2_mounts}", "mount", "-t", "tmpfs", "tmpfs-not-shared", storage, check=True)
    sh("scontrol", "update", "NodeName=rqmn-c2", "State=DRAIN", "Reason=resqmp-test-held-back", env=MN_ENV, check=True)
    proc = None
    try:
        batch = slow_batch(mn_example, "one-node", delay=0.1, log_dir=str(calls))
        out = folder / "faults.epc"
        proc = start_launch(_node_local_profile(folder, storage), batch, out, *run_options(folder, name))
        # rqmn-c1's worker has registered with the launcher's scheduler; rqmn-c2's job waits
        assert wait_until(lambda: any(registered_worker_jobs("slurm", name, folder / "logs").values()), 120), \
            (mn_jobs(name), proc.poll())
        assert set(running_on(name).values()) == {"rqmn-c1"}, mn_jobs(name)
        sh("scontrol", "update", "NodeName=rqmn-c2", "State=RESUME", env=MN_ENV, check=True)
        stdout, stderr = finish(proc)
    finally:
        sh("scontrol", "update", "NodeName=rqmn-c2", "State=RESUME", env=MN_ENV)
        sh("nsenter", f"--mount={c2_mounts}", "umount", storage)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.CLUSTER, stdout + stderr
    message = stderr.strip().splitlines()[-1]
    assert re.search(r"rqmn-c2 \(worker tls://10\.211\.77\.12:\d+\): cannot read a file the launcher wrote", message), \
        message
    assert "rqmn-c1" not in message
    assert not list(calls.iterdir())              # no task ran, not even on the healthy node
    assert not out.exists()
    assert wait_until(lambda: not mn_jobs(name), 30), mn_jobs(name)
