"""`resqmp launch --profile local` end to end on a 2-worker LocalCluster, against resqpy's own
function_multiprocessing on the same inputs."""
from __future__ import annotations

import json
import os

import pytest

from conftest import run_resqmp
from epc_compare import content, resqpy_reference
from resqmp.errors import ExitCode

WRAPPER_BATCHES = {
    "find_faces": ("batch", "GridConnectionSetRepresentation"),
    "mesh": ("batch_mesh", "Grid2dRepresentation"),
    "blocked_wells": ("batch_wells", "BlockedWellboreRepresentation"),
}


@pytest.mark.parametrize("kind", sorted(WRAPPER_BATCHES))
def test_launch_matches_resqpy(example, tmp_path, kind):
    key, main_type = WRAPPER_BATCHES[kind]
    out = tmp_path / "out.epc"
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", example[key],
                      "--output", out, check=0)
    assert "dashboard: http://127.0.0.1" in proc.stderr
    assert " INFO " not in proc.stderr                # distributed's chatter only with --debug
    ref = tmp_path / "ref" / "ref.epc"
    ref.parent.mkdir()
    assert all(resqpy_reference(example[key], ref, tmp_path / "ref"))
    ours, theirs = content(out), content(ref)
    assert ours["parts"] == theirs["parts"]
    assert ours["faces"] == theirs["faces"]
    n_tasks = len(json.loads(out.with_name("out.report.json").read_text())["tasks"])
    assert sum(n for (t, _), n in ours["parts"].items() if t == main_type) == n_tasks
    if kind == "find_faces":
        assert len(ours["faces"]) == n_tasks and all(n > 0 for n in ours["faces"].values())
    report = json.loads(out.with_name("out.report.json").read_text())
    assert report["totals"] == {**report["totals"], "tasks": n_tasks, "succeeded": n_tasks, "failed": 0}
    from resqmp.batch import load
    assert [t["name"] for t in report["tasks"]] == load(example[key]).names
    assert [t["index"] for t in report["tasks"]] == list(range(n_tasks))
    assert len({t["worker"] for t in report["tasks"]}) <= 2
    # task files are removed after a successful run; nothing but the output, its .h5 and the report
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "ref") == ["out.epc", "out.h5", "out.report.json"]


def test_a_raising_task_is_isolated(example_with_outside, tmp_path):
    out = tmp_path / "faults.epc"
    proc = run_resqmp("launch", "--profile", "local", "--batch", example_with_outside["batch"],
                      "--output", out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    by_name = {t["name"]: t for t in report["tasks"]}
    assert by_name["outside"]["success"] is False
    assert by_name["outside"]["error"].startswith("AttributeError")
    assert all(t["success"] for n, t in by_name.items() if n != "outside")
    assert report["totals"]["failed"] == 1 and report["totals"]["succeeded"] == 3
    faces = content(out)["faces"]
    assert sorted(faces) == ["fault 1", "fault 2", "fault 3"]
    assert "1 failed" in proc.stdout


def test_numba_threads_are_one_inside_workers(tmp_path):
    batch = tmp_path / "batch.yaml"
    tasks = "\n".join(f"  - {{record_file: rec{i}.json}}" for i in range(4))
    batch.write_text(f"wrapper: wrappers_for_tests:numba_threads_wrapper\ntasks:\n{tasks}\n")
    run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", tmp_path / "o.epc",
               env={"NUMBA_NUM_THREADS": "2"}, check=0)   # the launcher's own value must not leak
    records = [json.loads((tmp_path / f"rec{i}.json").read_text()) for i in range(4)]
    assert {r["config"] for r in records} == {1}
    assert {r["get_num_threads"] for r in records} == {1}
    assert {r["cache"] for r in records} == {"true"}
    assert {r["hdf5_locking"] for r in records} == {"FALSE"}


def test_profile_environment_overrides_defaults(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("wrapper: wrappers_for_tests:numba_threads_wrapper\ntasks:\n  - {record_file: rec.json}\n")
    run_resqmp("launch", "--profile", "local", "--set", "environment.NUMBA_NUM_THREADS=2",
               "--batch", batch, "--output", tmp_path / "o.epc", check=0)
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["config"] == 2 and rec["env"] == "2"


def test_launch_in_process_leaves_the_environment_and_dask_config_as_found(tmp_path, monkeypatch):
    """launch() as a library call: workers get the profile's environment, the caller keeps its own
    (distributed's nanny exports pre-spawn-environ into the parent; a CI scheduler started later by
    the same process once came up with one CPU because `nproc` read OMP_NUM_THREADS=1)."""
    import dask
    from resqmp.run import launch
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv("HDF5_USE_FILE_LOCKING", raising=False)
    environ = dict(os.environ)
    watched = ("distributed.nanny.pre-spawn-environ", "distributed.worker.preload",
               "distributed.scheduler.allowed-failures", "distributed.admin.system-monitor.interval",
               "distributed.admin.tick.interval")
    config = {key: dask.config.get(key, None) for key in watched}
    batch = tmp_path / "batch.yaml"
    batch.write_text("wrapper: wrappers_for_tests:numba_threads_wrapper\ntasks:\n  - {record_file: rec.json}\n")
    result = launch("local", str(batch), str(tmp_path / "o.epc"), allowed_wrappers=("wrappers_for_tests:*",))
    assert result.exit_code == 0
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["config"] == 1 and rec["env"] == "1"             # the profile won inside the worker
    assert dict(os.environ) == environ                           # ...and not in the caller
    assert {key: dask.config.get(key, None) for key in watched} == config


def test_a_profile_preload_keeps_resqmps_worker_preload():
    """A worker given `preload` ignores distributed.worker.preload: resqmp's own module (SIGINT
    ignored, resqpy imported at start) must join the profile's list, not the config."""
    from resqmp import profiles
    from resqmp.backends import local
    p = profiles.load("local", ["cluster.preload=[resqpy.multi_processing]"])
    assert local.LocalBackend(p, {}).cluster_kwargs()["preload"] == ["resqpy.multi_processing", "resqmp.worker_preload"]
    assert local.LocalBackend(profiles.load("local"), {}).cluster_kwargs()["preload"] == ["resqmp.worker_preload"]
