"""`resqmp profiles check`: the doctor starts the profile's cluster for real and walks every stage
a launch depends on. On local, real SLURM and real SGE: a working profile passes every stage; a
profile broken on purpose fails at the stage where it is broken, with that stage's exit code and
the scheduler's own words, and leaves no job in the queue and no worker process behind.
SLURM/SGE runs hold /tmp/resqmp-heavy.lock (TEAM.md)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from conftest import BIN, run_resqmp
from hpc_fixtures import PROFILES, SGE_ENV, SHARED, scheduler_jobs, unique, wait_until
from proc_watch import marked_processes, new_marker, wait_until_gone
from resqmp.doctor import STAGES

LINE = re.compile(r"^(ok|warn|FAILED|skipped|interrupted)\s+(\S+)\s+(?:[\d.]+ s|-)\s*(.*)$")


def stages(stdout: str) -> dict[str, tuple[str, str]]:
    """stage -> (status, detail), from the check's one line per stage."""
    found = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            found[m.group(2)] = (m.group(1), m.group(3))
    return found


def check(*args, cwd=None, env=None, timeout=600) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_resqmp("profiles", "check", *args, cwd=cwd, env={**SGE_ENV, **(env or {})}, timeout=timeout)
    return proc, stages(proc.stdout)


def assert_failed_at(proc, seen: dict, stage: str, code: int, *words: str) -> None:
    """`stage` failed (every stage before it passed, every one after it up to teardown skipped),
    the exit code is the stage's, the error line names the stage, and says `words`."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert list(seen) == list(STAGES), proc.stdout
    at = STAGES.index(stage)
    assert all(seen[s][0] in ("ok", "warn") for s in STAGES[:at]), proc.stdout
    assert seen[stage][0] == "FAILED", proc.stdout
    assert all(seen[s][0] == "skipped" for s in STAGES[at + 1:-1]), proc.stdout
    assert seen["teardown"][0] == "ok", proc.stdout
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("resqmp: error: ")]
    assert len(error) == 1 and f"stage {stage} failed" in error[0], proc.stderr
    for w in words:
        assert w in error[0], error[0]
    assert "Traceback" not in proc.stderr


def assert_passed(proc, seen: dict) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(seen) == list(STAGES), proc.stdout
    assert all(status == "ok" for status, _ in seen.values()), proc.stdout
    assert "every stage passed" in proc.stdout


# --------------------------------------------------------------------------- local

def test_local_profile_passes_every_stage_and_leaves_nothing(tmp_path):
    marker = new_marker()
    proc, seen = check("local", cwd=tmp_path, env=marker)
    assert_passed(proc, seen)
    assert "2 tasks" in seen["run"][1] and "2 grid connection sets" in seen["run"][1]
    assert "numba=1" in seen["environment"][1]
    assert "every worker process ended" in seen["teardown"][1]
    assert wait_until_gone(marker, 60) == []
    assert list(tmp_path.iterdir()) == []          # the check's folder (and .resqmp-tasks) removed
    # the first check filled the numba cache: numba's counters on the next one's worker say warm
    proc, seen = check("local", cwd=tmp_path)
    assert_passed(proc, seen)
    assert seen["environment"][1].endswith("writable, warm"), seen["environment"]


def test_local_profile_error_is_the_profile_stage(tmp_path):
    proc, seen = check("local", "--set", "cluster.n_wrokers=2", cwd=tmp_path)
    assert_failed_at(proc, seen, "profile", 4, "n_wrokers")
    assert seen["teardown"][1] == "nothing was started"


def test_local_shared_directory_missing_here_is_the_example_stage(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc, seen = check("local", "--set", f"storage.shared_directory={blocker}/shared", cwd=tmp_path)
    assert_failed_at(proc, seen, "example", 6, str(blocker))


def test_local_unwritable_numba_cache_is_the_environment_stage(tmp_path):
    marker = new_marker()
    proc, seen = check("local", "--set", "environment.NUMBA_CACHE_DIR=/proc/resqmp-no-cache", cwd=tmp_path,
                       env=marker)
    assert_failed_at(proc, seen, "environment", 7, "NUMBA_CACHE_DIR '/proc/resqmp-no-cache' is not writable")
    assert wait_until_gone(marker, 60) == []


def interrupted_after_joined(args: list[str], env=None, cwd=None, stage: str = "joined") -> tuple[int, str, str]:
    """`resqmp profiles check ARGS` in a session of its own, Ctrl-C'd (SIGINT to its process group, as
    a terminal does) once its workers have joined (a Ctrl-C while a local worker interpreter
    starts is that interpreter's own business), or once `stage` passed. Returns exit code, stdout,
    stderr."""
    proc = subprocess.Popen([str(BIN / "resqmp"), "profiles", "check", *args], cwd=cwd,
                            env={**os.environ, **SGE_ENV, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any(ln.startswith("ok") and f" {stage} " in ln for ln in lines)
                          or proc.poll() is not None, 180)
        assert proc.poll() is None, "".join(lines) + proc.stderr.read()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=180)
        reader.join(30)
        return proc.returncode, "".join(lines), proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def assert_interrupt_shown(seen: dict, out: str, err: str) -> None:
    """The Ctrl-C goes out when `joined` is printed, and the stages after it may all pass before it
    lands. Wherever it lands the check says so: the stage it stopped, or, when it landed in the
    teardown (which it never breaks into), the line saying the check is stopping."""
    stopped = [stage for stage, (status, _) in seen.items() if status == "interrupted"]
    assert stopped or "resqmp: stopping: tearing down the check's cluster" in err, out + err


def test_ctrl_c_tears_the_check_down(tmp_path):
    marker = new_marker()
    code, out, err = interrupted_after_joined(["local"], env=marker, cwd=tmp_path)
    assert code == 130, out + err
    seen = stages(out)
    assert_interrupt_shown(seen, out, err)
    assert seen["teardown"][0] == "ok", out
    # the check's own last word, no traceback through resqmp (workers cut off mid-task may log
    # distributed's heartbeat errors while they go)
    assert err.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), err
    assert "/resqmp/" not in err, err
    assert wait_until_gone(marker, 60) == []
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- SLURM and SGE

QUEUE_OPTION = {"slurm": "nosuch", "sge": "nosuch.q"}
REFUSAL = {"slurm": "invalid partition specified: nosuch", "sge": "nosuch.q"}


@pytest.fixture(params=["slurm", "sge"])
def scheduler(request):
    request.getfixturevalue(request.param)      # the running single-node scheduler
    return request.param


def hpc_check(backend: str, *sets: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    """The CI profile of the scheduler with a job name of its own, plus `sets`."""
    job_name = unique("dr")
    args = [str(PROFILES[backend]), "--set", f"cluster.job_name={job_name}"]
    for s in sets:
        args += ["--set", s]
    proc, seen = check(*args, cwd=SHARED)
    return proc, seen, job_name


def assert_queue_empty(backend: str, job_name: str) -> None:
    assert scheduler_jobs(backend, job_name) == []


def test_hpc_profile_passes_every_stage(scheduler):
    proc, seen, job_name = hpc_check(scheduler)
    assert_passed(proc, seen)
    ids = re.match(r"jobs (\d+), (\d+) accepted", seen["submission"][1])
    assert ids, seen["submission"]
    assert seen["tls"][1].startswith("tls://"), seen["tls"]
    assert "2 grid connection sets" in seen["run"][1]
    assert f"{ids.group(1)}, {ids.group(2)} gone" in seen["teardown"][1]
    assert_queue_empty(scheduler, job_name)


def test_hpc_unknown_queue_is_the_submission_stage(scheduler):
    proc, seen, job_name = hpc_check(scheduler, f"cluster.queue={QUEUE_OPTION[scheduler]}")
    assert_failed_at(proc, seen, "submission", 7, "could not be submitted", REFUSAL[scheduler])
    assert_queue_empty(scheduler, job_name)


def test_hpc_worker_that_cannot_start_is_the_joined_stage(scheduler):
    # as launch: once the scheduler says every worker job ended, joined fails with the jobs' own
    # output instead of waiting out the (long) worker timeout to say "no worker arrived"
    proc, seen, job_name = hpc_check(scheduler, "cluster.python=/nonexistent/python", "scaling.worker_timeout=900")
    assert_failed_at(proc, seen, "joined", 7, "every worker job ended before a worker connected",
                     "/nonexistent/python: No such file or directory")
    assert "no worker arrived" not in proc.stderr
    assert_queue_empty(scheduler, job_name)


def test_hpc_environment_overridden_by_the_prologue_is_the_environment_stage(scheduler):
    # a site prologue line that sets the thread count after resqmp's exports: numba then runs
    # 2 threads per single-core worker
    proc, seen, job_name = hpc_check(scheduler, 'cluster.job_script_prologue=["export NUMBA_NUM_THREADS=2"]')
    assert_failed_at(proc, seen, "environment", 7, "NUMBA_NUM_THREADS='2', the profile sets '1'",
                     "numba runs 2 threads")
    assert_queue_empty(scheduler, job_name)


def test_hpc_unwritable_numba_cache_is_the_environment_stage(scheduler):
    proc, seen, job_name = hpc_check(scheduler, "environment.NUMBA_CACHE_DIR=/proc/resqmp-no-cache")
    assert_failed_at(proc, seen, "environment", 7, "NUMBA_CACHE_DIR '/proc/resqmp-no-cache' is not writable")
    assert_queue_empty(scheduler, job_name)


def _python_in_own_mounts(command: str) -> str:
    """cluster.python that runs the worker's interpreter after `command` in a mount namespace of its
    own: what the worker sees there differs from what the launcher sees (a node-local folder)."""
    return f"cluster.python=unshare -m sh -c '{command} && exec \"$0\" \"$@\"' {sys.executable}"


def test_hpc_node_local_shared_directory_is_the_shared_stage(scheduler):
    # the worker sees its own empty folder where the launcher's shared directory is: what a
    # node-local /tmp is on a real cluster (TLS files and job logs stay on the shared storage)
    local = SHARED / unique("nodelocal-")
    local.mkdir()
    try:
        proc, seen, job_name = hpc_check(
            scheduler, f"storage.shared_directory={local}", f"cluster.shared_temp_directory={SHARED}",
            f"cluster.log_directory={SHARED / 'logs'}", _python_in_own_mounts(f"mount -t tmpfs tmpfs {local}"))
    finally:
        subprocess.run(["rm", "-rf", str(local)])
    assert_failed_at(proc, seen, "shared", 7, "cannot read a file the launcher wrote there", "not node-local")
    assert_queue_empty(scheduler, job_name)


def test_hpc_read_only_shared_directory_is_the_shared_stage(scheduler):
    ro = SHARED / unique("readonly-")
    ro.mkdir()
    try:
        proc, seen, job_name = hpc_check(
            scheduler, f"storage.shared_directory={ro}", f"cluster.shared_temp_directory={SHARED}",
            f"cluster.log_directory={SHARED / 'logs'}", _python_in_own_mounts(f"mount --bind -o ro {ro} {ro}"))
    finally:
        subprocess.run(["rm", "-rf", str(ro)])
    assert_failed_at(proc, seen, "shared", 7, "cannot write there")
    assert_queue_empty(scheduler, job_name)


def test_hpc_ctrl_c_cancels_the_jobs(scheduler):
    # the Ctrl-C goes out once the jobs are accepted: the check is then waiting for its workers to
    # join, seconds at least, so it always lands in the check (once `joined` was printed, the
    # stages after it took 0.3 s on the CI machine and a loaded run's Ctrl-C came after the end)
    job_name = unique("dr")
    code, out, err = interrupted_after_joined([str(PROFILES[scheduler]), "--set", f"cluster.job_name={job_name}"],
                                              cwd=SHARED, stage="submission")
    assert code == 130, out + err
    seen = stages(out)
    assert_interrupt_shown(seen, out, err)
    assert seen["teardown"][0] == "ok" and "gone" in seen["teardown"][1], out
    assert err.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), err
    assert "/resqmp/" not in err, err        # no traceback through resqmp (distributed may log its own)
    assert_queue_empty(scheduler, job_name)


@pytest.mark.parametrize("module", ["resqmp.backends.jobqueue", "resqmp.backends.schedulers",
                                    "resqmp.backends.jobs", "resqmp.backends.diagnostics"])
def test_importing_the_jobqueue_backend_keeps_the_processs_sigint_handler(module):
    # dask_jobqueue.runner installs `sys.exit()` as the SIGINT handler when it is imported: a
    # Ctrl-C during `launch` or `profiles check` on SLURM/SGE then ended the process with exit 0,
    # past resqmp's own handler (exit 130, teardown reported). Whichever of resqmp's modules
    # imports dask_jobqueue first must keep the handler.
    code = ("import signal\n"
            "def mine(*_): pass\n"
            "signal.signal(signal.SIGINT, mine)\n"
            f"import {module}\n"
            "assert signal.getsignal(signal.SIGINT) is mine, signal.getsignal(signal.SIGINT)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_hpc_ctrl_c_during_launch_exits_130_and_cancels_the_jobs(slurm, hpc_example, hpc_workdir):
    # the same SIGINT handler defect as the check's, met by `launch` on a jobqueue profile
    from conftest import ALLOW_TEST_WRAPPERS, TESTS, slow_batch
    job_name = unique("dl")
    batch = slow_batch(hpc_example, job_name, delay=30.0)
    out = hpc_workdir / f"{job_name}.epc"
    proc = subprocess.Popen([str(BIN / "resqmp"), "launch", "--profile", str(PROFILES["slurm"]), "--batch", str(batch),
                             "--output", str(out), "--set", f"cluster.job_name={job_name}", *ALLOW_TEST_WRAPPERS],
                            env={**os.environ, "PYTHONPATH": str(TESTS)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # a task runs: the journal has its header, the jobs are up
        assert wait_until(lambda: (scheduler_jobs("slurm", job_name) and
                                   out.with_suffix(".journal.jsonl").exists()) or proc.poll() is not None, 180)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "resqmp: error: interrupted" in stderr
    assert not out.exists()
    assert_queue_empty("slurm", job_name)
