"""tasks.group_size: consecutive tasks sent to Dask as one Dask task (resqmp.execute.run_group).

Same model whatever the group size; each task still reported once, with its own success, attempts,
retry, timeout; a group whose worker is killed is re-run whole by Dask."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import dask
import psutil
import pytest
import yaml
from distributed import Client, LocalCluster, get_task_stream

from conftest import run_resqmp, slow_batch
from epc_compare import content, resqpy_reference
from proc_watch import new_marker, start_launch, wait_for, wait_until_gone, worker_processes
from resqmp import profiles
from resqmp.errors import ExitCode, ProfileError
from resqmp.example import write_example
from resqmp.execute import auto_group_size, group_size_for, run_on_client

LOGGED = "wrappers_for_tests:logged_wrapper"
SCRIPTED = "wrappers_for_tests:scripted_wrapper"


# --- the auto rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_tasks, workers, size", [
    (1024, 2, 32),     # the benchmark: 512 tasks per worker
    (64, 2, 2), (63, 2, 1), (96, 2, 3), (128, 2, 4), (256, 2, 8), (512, 2, 16), (2047, 2, 63),
    (2048, 2, 64), (10_000, 2, 64),
    (32, 1, 2), (31, 1, 1), (8, 2, 1), (1, 1, 1), (0, 2, 1),
    (1024, 64, 1), (2048, 64, 2),
    (100, 0, 6),       # a cluster with no worker yet counts as one
])
def test_auto_rule(n_tasks, workers, size):
    assert auto_group_size(n_tasks, workers) == size
    assert group_size_for("auto", n_tasks, workers) == size
    assert group_size_for(None, n_tasks, workers) == size


@pytest.mark.parametrize("task_seconds, size", [
    (None, 32), (0.044, 22),    # find-faces in the benchmark: 22 fit in a second
    (0.02, 32), (0.09, 11),
    (0.3, 3), (0.5, 2), (0.6, 1), (30.0, 1), (float("inf"), 1),
])
def test_auto_keeps_a_group_within_a_second_of_work(task_seconds, size):
    assert auto_group_size(1024, 2, task_seconds) == size
    assert auto_group_size(64, 2, 0.01) == 2                 # the count rule still caps it


def test_a_fixed_group_size_is_used_as_given():
    assert group_size_for(1, 10_000, 2) == 1
    assert group_size_for(7, 3, 2) == 7
    for bad in (0, -1, "many", 2.5, True):
        with pytest.raises(ValueError, match="tasks.group_size"):
            group_size_for(bad, 10, 2)


# --- profile validation ----------------------------------------------------------------------

@pytest.mark.parametrize("value", ["auto", 1, 3])
def test_profile_accepts_auto_and_positive_integers(tmp_path, value):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"extends": "local", "tasks": {"group_size": value}}))
    assert profiles.load(str(path)).tasks["group_size"] == value
    assert profiles.load("local", [f"tasks.group_size={value}"]).tasks["group_size"] == value


@pytest.mark.parametrize("value, shown", [(0, "int 0"), ("many", "str 'many'")])
def test_profile_rejects_a_bad_group_size_in_one_clear_line(tmp_path, value, shown):
    expected = f"tasks.group_size: expected 'auto' or integer >= 1, got {shown}"
    with pytest.raises(ProfileError) as info:
        profiles.load("local", [f"tasks.group_size={value}"])
    assert str(info.value) == f"--set 'tasks.group_size={value}': {expected}"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"backend": "local", "tasks": {"group_size": value}}))
    proc = run_resqmp("profiles", "validate", bad)
    assert proc.returncode == ExitCode.PROFILE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and expected in lines[0], proc.stderr


# --- run_on_client on a real LocalCluster ----------------------------------------------------

@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


def calls(log_dir: Path) -> dict[int, list[int]]:
    """index -> pids of every call of that task, in call order (see wrappers_for_tests.log_call)."""
    found: dict[int, list[tuple[int, int]]] = {}
    for p in log_dir.iterdir():
        index, pid, ns = map(int, p.name.split("."))
        found.setdefault(index, []).append((ns, pid))
    return {i: [pid for _, pid in sorted(v)] for i, v in found.items()}


def run_batch(client, tmp_path, tasks: list[dict], **options):
    """run_on_client with logged_wrapper: (records in delivery order, Dask keys run, calls)."""
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    by_index = {i: {"log_dir": str(log_dir), **t} for i, t in enumerate(tasks)}
    records: list[dict] = []
    with get_task_stream(client=client) as stream:
        used = run_on_client(client, LOGGED, by_index, str(tmp_path), records.append, key_prefix="g",
                             **options)
    keys = {t["key"] for t in stream.data if t["key"].startswith("g-")}
    return used, records, keys, calls(log_dir)


@pytest.mark.parametrize("seconds, size", [(0.01, 2), (0.55, 1)])
def test_auto_times_the_first_tasks_before_it_groups_the_rest(client, tmp_path, seconds, size):
    """workers=1 and 32 tasks: the count rule allows pairs. Tasks 0-2 go alone; task 0 runs cold
    and task 1's time decides: short tasks go in pairs from task 3 on, tasks over half a second
    alone."""
    used, records, keys, ran = run_batch(client, tmp_path, [{"seconds": seconds}] * 32,
                                         group_size="auto", workers=1)
    assert used == size
    assert sorted(r["index"] for r in records) == list(range(32))
    assert all(r["success"] for r in records)
    assert keys == {f"g-{i}-{i}-a1" for i in range(3)} | {f"g-{i}-{min(i + size - 1, 31)}-a1" for i in range(3, 32, size)}
    assert {i: len(p) for i, p in ran.items()} == {i: 1 for i in range(32)}


def test_a_task_raising_inside_a_group_costs_only_itself(client, tmp_path):
    tasks = [{"fail": i == 4} for i in range(9)]
    used, records, keys, ran = run_batch(client, tmp_path, tasks, group_size=3)
    assert used == 3
    assert sorted(r["index"] for r in records) == list(range(9))        # each index exactly once
    by_index = {r["index"]: r for r in records}
    assert [by_index[i]["success"] for i in range(9)] == [i != 4 for i in range(9)]
    assert by_index[4]["error"].startswith("RuntimeError: task 4 asked to fail")
    assert all(by_index[i]["error"] is None for i in range(9) if i != 4)
    assert {r["attempts"] for r in records} == {1}
    assert keys == {"g-0-2-a1", "g-3-5-a1", "g-6-8-a1"}
    assert {i: len(p) for i, p in ran.items()} == {i: 1 for i in range(9)}
    # the records of one group come from one worker process, one after the other
    for group in ((0, 1, 2), (3, 4, 5), (6, 7, 8)):
        assert len({by_index[i]["pid"] for i in group}) == 1


def test_retry_on_error_resubmits_only_the_failing_task(client, tmp_path):
    tasks = [{"fail_once": i == 1} for i in range(6)]
    _, records, keys, ran = run_batch(client, tmp_path, tasks, group_size=3, retries=2, retry_on_error=True)
    assert sorted(r["index"] for r in records) == list(range(6))
    assert all(r["success"] for r in records)
    assert {r["index"]: r["attempts"] for r in records} == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1}
    assert keys == {"g-0-2-a1", "g-3-5-a1", "g-1-1-a2"}                  # alone, attempt 2
    assert {i: len(p) for i, p in ran.items()} == {0: 1, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1}


def test_without_retry_on_error_a_failed_task_stays_failed(client, tmp_path):
    tasks = [{"fail_once": i == 1} for i in range(3)]
    _, records, keys, ran = run_batch(client, tmp_path, tasks, group_size=3, retries=2)
    assert [r["success"] for r in sorted(records, key=lambda r: r["index"])] == [True, False, True]
    assert keys == {"g-0-2-a1"} and {i: len(p) for i, p in ran.items()} == {0: 1, 1: 1, 2: 1}


def test_a_timeout_inside_a_group_restarts_its_worker_and_the_rest_of_the_group_succeeds(client, tmp_path):
    tasks = [{"seconds": 600 if i == 1 else 0.05} for i in range(6)]
    # Proven by the records, not a stopwatch: task 1 would have succeeded after its 600 s; only
    # the timeout marks it timed_out with this error.
    _, records, keys, ran = run_batch(client, tmp_path, tasks, group_size=3, timeout=2)
    assert sorted(r["index"] for r in records) == list(range(6))
    by_index = {r["index"]: r for r in records}
    assert by_index[1]["timed_out"] and not by_index[1]["success"]
    assert by_index[1]["error"].startswith("TimeoutError: still running after 2 s")
    assert all(by_index[i]["success"] for i in range(6) if i != 1)
    assert {r["attempts"] for r in records} == {1}
    # task 2 was not started next to the stuck thread: sent again, alone, once the worker restarted
    assert keys == {"g-0-2-a1", "g-3-5-a1", "g-2-2-a1"}
    assert {i: len(p) for i, p in ran.items()} == {i: 1 for i in range(6)}
    stuck_pid = by_index[1]["pid"]
    assert ran[2] != [stuck_pid]
    wait_for(lambda: not _alive(stuck_pid), timeout=30, what="the stuck worker to be restarted")
    client.wait_for_workers(2, timeout=60)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- resqmp launch ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def faults32(tmp_path_factory):
    """32 find-faces tasks (auto gives groups of 2 on one worker) and resqpy's recombined reference."""
    folder = tmp_path_factory.mktemp("faults32")
    info = write_example(folder, surfaces=32)
    ref = folder / "ref" / "ref.epc"
    ref.parent.mkdir()
    assert all(resqpy_reference(info["batch"], ref, ref.parent))
    return {"batch": info["batch"], "reference": content(ref)}


@pytest.mark.parametrize("setting, size", [("1", 1), ("3", 3), ("auto", None)])
def test_the_model_is_the_same_whatever_the_group_size(faults32, tmp_path, setting, size):
    out = tmp_path / "faults.epc"
    run_resqmp("launch", "--profile", "local", "--workers", "1", "--set", f"tasks.group_size={setting}",
               "--batch", faults32["batch"], "--output", out, check=0)
    assert content(out) == faults32["reference"]
    report = json.loads(out.with_name("faults.report.json").read_text())
    if size is None:
        # auto on one worker: task 0 runs cold, task 1's time decides (pairs below half a second,
        # as on an idle machine; alone on one loaded enough to take longer), whatever the machine
        size = group_size_for("auto", 32, 1, report["tasks"][1]["seconds"])
    assert report["group_size"] == size
    assert [t["index"] for t in report["tasks"]] == list(range(32))
    assert report["totals"]["succeeded"] == 32 and {t["attempts"] for t in report["tasks"]} == {1}


def test_a_worker_killed_mid_group_costs_nothing(slow, tmp_path):
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    batch = slow_batch(slow, "killed-mid-group", delay=0.5, log_dir=str(log_dir))
    out = tmp_path / "faults.epc"
    marker = new_marker()
    proc = start_launch(batch, out, "--workers", "2", "--set", "tasks.group_size=4", marker=marker)
    # groups 0-3 and 4-7; kill the worker running task 1, after it finished task 0 of its group
    wait_for(lambda: 1 in calls(log_dir), what="task 1 to start")
    victim = calls(log_dir)[1][0]
    assert victim in {p.pid for p in worker_processes(proc.pid)}
    psutil.Process(victim).send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["group_size"] == 4
    assert report["totals"]["succeeded"] == 8
    assert content(out) == slow["reference"]
    ran = calls(log_dir)
    assert ran[0][0] == victim and len(ran[0]) == 2          # the whole group ran again elsewhere
    assert victim not in ran[0][1:] + ran[1][1:]
    assert wait_until_gone(marker) == []


def test_the_api_groups_when_each_worker_has_many_tasks(faults32, tmp_path):
    """function_multiprocessing passes its client's task slots: 32 short tasks on one worker go in
    pairs; and resqpy's find-faces tasks through it give resqpy's model."""
    import resqmp
    from resqmp.batch import load
    from wrappers_for_tests import logged_wrapper
    b = load(faults32["batch"])
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as one, \
            Client(one, set_as_default=False) as c:
        # 10 ms tasks, 50 times below the half second above which auto keeps tasks alone: pairs on
        # a machine of any speed (a find-faces task took 0.48 s on a loaded CI-kind machine)
        with get_task_stream(client=c) as stream:
            short = resqmp.function_multiprocessing(logged_wrapper, [{"log_dir": str(log_dir), "seconds": 0.01}] * 32,
                                                    tmp_path / "short.epc", cluster=c, tmp_dir_path=tmp_path)
        success = resqmp.function_multiprocessing(b.function, [dict(k) for k in b.tasks], tmp_path / "o.epc",
                                                  cluster=c, tmp_dir_path=tmp_path)
    assert short == [True] * 32 and success == [True] * 32
    keys = {t["key"] for t in stream.data if t["key"].startswith("resqmp-")}
    prefixes = {k.rsplit("-", 3)[0] for k in keys}
    assert len(prefixes) == 1 and re.fullmatch(r"resqmp-[0-9a-f]{8}", prefixes.pop())   # unique per call
    # tasks 0-2 alone (auto times them; the first, cold one, does not count), then pairs
    assert {k.split("-", 2)[2] for k in keys} == \
        {f"{i}-{i}-a1" for i in range(3)} | {f"{i}-{min(i + 1, 31)}-a1" for i in range(3, 32, 2)}
    assert content(tmp_path / "o.epc") == faults32["reference"]


def test_when_dask_gives_up_on_a_group_each_of_its_tasks_runs_again_alone(tmp_path):
    """allowed-failures 0: the group whose worker task 1 kills ends in KilledWorker. Which of its
    tasks killed the worker is unknown, so each is sent again alone: the others succeed (a group
    is resqmp's shortcut, never a reason for a task to fail), task 1 kills its worker again and is
    reported failed; the other group's tasks succeed."""
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as c, \
                Client(c, set_as_default=False) as client:
            records: list[dict] = []
            by_index = {i: {"log_dir": str(log_dir), "calls": [-0.3] if i == 1 else [0.2]} for i in range(8)}
            run_on_client(client, SCRIPTED, by_index, str(tmp_path), records.append, group_size=4)
    assert sorted(r["index"] for r in records) == list(range(8))
    by_index = {r["index"]: r for r in records}
    assert not by_index[1]["success"]
    assert by_index[1]["error"] == "KilledWorker: worker died while running it"
    assert by_index[1]["attempts"] == 2                  # in its group, then alone
    assert len(by_index[1]["lost_workers"]) == 2
    for i in (0, 2, 3):
        assert by_index[i]["success"], by_index[i]
        assert by_index[i]["attempts"] == 2
    assert all(by_index[i]["success"] and by_index[i]["attempts"] == 1 for i in range(4, 8))
    ran = calls(log_dir)
    assert len(ran[1]) == 2 and all(len(ran[i]) == 1 for i in range(4, 8))
