"""Group partials (resqmp.premerge): workers gather each group's outputs into one EPC + HDF5 file
and the launcher merges each task's share from it. The recombined model must be resqpy's, to the
byte (test_recombine's comparison), on a real LocalCluster: groups of one, of several, a failing
task inside a group, parts shared by uuid and by equivalence within and across groups, a group
sent again after its worker died, a run resumed from its journal mid-group.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from resqmp.batch import load
from resqmp.execute import run_group, run_on_client
from resqmp.journal import Journal
from resqmp.premerge import FOLDER, manifest_of
from resqmp.recombine import Recombiner
from test_recombine import assert_identical, resqpy_recombine

FIND_FACES = "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper"


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Task kwargs from two example models whose CRSs are equivalent (other uuids), with surfaces
    and wells repeated: CRSs, fault features and interpretations consolidate within a group and
    across groups; grids, trajectories and datums recur with the same uuid."""
    from resqmp.example import write_example
    root = tmp_path_factory.mktemp("premerge")
    ex_a = write_example(root / "a", surfaces=3, wells=3, mesh_properties=1)
    ex_b = write_example(root / "b", surfaces=2, wells=2, mesh_properties=1)
    fa, fb = load(ex_a["batch"]).tasks, load(ex_b["batch"]).tasks
    wa, wb = load(ex_a["batch_wells"]), load(ex_b["batch_wells"])
    faces = [fa[0], fa[1], fa[0], fb[0], fa[2], fb[1], fa[1], fb[0], fa[2], fa[0], fb[1]]
    # a new CRS in each task, written before the fault: the task's part order is not resqpy's
    # consolidation order (the partial's), and the relationships must follow the task's
    crs_first = [{"name": n} for n in ("fault A", "fault B", "fault A", "fault A", "fault C", "fault B", "fault A")]
    return {"find_faces": (FIND_FACES, faces * 2),
            "crs_first": ("wrappers_for_tests:crs_first_surface", crs_first * 2),
            "wells": (wa.wrapper, [wa.tasks[0], wa.tasks[1], wb.tasks[0], wa.tasks[0], wa.tasks[2], wb.tasks[1],
                                   wa.tasks[1], wb.tasks[0]] * 2)}


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as c, \
            Client(c, set_as_default=False) as cl:
        yield cl


def launch_like(client, wrapper, tasks, folder: Path, group_size, **kwargs) -> tuple[Path, list[dict]]:
    """What `resqmp launch` does with results (run.py): each record merged as it arrives, with its
    group partial. Returns (recombined EPC, records in task order)."""
    run_dir = folder / "tasks"
    run_dir.mkdir(parents=True)
    out = folder / "out" / "out.epc"
    out.parent.mkdir()
    recombiner = Recombiner(out, task_directory=run_dir)
    records = {}

    def on_result(r):
        records[r["index"]] = r
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r.get("partial"))

    run_on_client(client, wrapper, dict(enumerate(tasks)), str(run_dir), on_result, group_size=group_size,
                  premerge=True, **kwargs)
    recombiner.publish()
    return out, [records[i] for i in sorted(records)]


def recombined(records, folder: Path) -> Path:
    """The launcher's recombination of `records` (in index order, from their partials where named,
    in the run's task directory FOLDER/tasks) at FOLDER/out/out.epc."""
    out = folder / "out" / "out.epc"
    out.parent.mkdir()
    recombiner = Recombiner(out, task_directory=folder / "tasks")
    for r in records:
        recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r.get("partial"))
    recombiner.publish()
    return out


def reference(records, folder: Path) -> Path:
    """resqpy's own recombination loop on the very task files of `records`."""
    ref = folder / "ref" / "out.epc"
    ref.parent.mkdir()
    resqpy_recombine(records, ref)
    return ref


@pytest.mark.parametrize("kind", ["find_faces", "wells", "crs_first"])
@pytest.mark.parametrize("size", [1, 3, 16])
def test_the_model_is_resqpys_whatever_the_group_size(batches, client, tmp_path, kind, size):
    wrapper, tasks = batches[kind]
    out, records = launch_like(client, wrapper, tasks, tmp_path, size)
    assert all(r["success"] for r in records)
    # one partial per group of two or more, in the run's task directory; a task alone has
    # nothing to gather with: its own file is merged
    groups = [records[k:k + size] for k in range(0, len(records), size)]
    for group in groups:
        named = {r.get("partial") for r in group}
        assert named == {None} if len(group) == 1 else (len(named) == 1 and None not in named)
    partials = {r["partial"] for r in records if r.get("partial")}
    assert len(partials) == sum(len(g) > 1 for g in groups)
    assert all(Path(p).parent == tmp_path / "tasks" / FOLDER for p in partials)
    assert_identical(out, reference(records, tmp_path))


def test_a_failing_task_inside_a_group_costs_only_itself(batches, client, tmp_path):
    wrapper, tasks = batches["find_faces"]
    tasks = copy.deepcopy(tasks[:8])
    tasks[5]["surface_uuid"] = "00000000-0000-0000-0000-000000000000"    # not in the model: raises
    out, records = launch_like(client, wrapper, tasks, tmp_path, 4)
    assert [r["success"] for r in records] == [True] * 5 + [False] + [True] * 2
    assert records[5].get("partial") is None and records[5]["error"]
    # the group 4-7 still has its partial, of the three tasks that succeeded
    shares = json.loads(manifest_of(records[4]["partial"]).read_text())["tasks"]
    assert sorted(map(int, shares)) == [4, 6, 7]
    assert_identical(out, reference(records, tmp_path))


def test_a_group_sent_again_after_its_worker_died(batches, client, tmp_path):
    """Task 2's first call kills its worker: Dask sends the whole group 0-3 again; the model is
    resqpy's on the records that came back, with no part twice."""
    _, tasks = batches["find_faces"]
    marker_dir = tmp_path / "marker"
    marker_dir.mkdir()
    tasks = [{**t, "die_on": 2, "marker_dir": str(marker_dir)} for t in tasks[:8]]
    out, records = launch_like(client, "wrappers_for_tests:dying_find_faces", tasks, tmp_path, 4)
    assert (marker_dir / "died").exists()
    assert all(r["success"] for r in records)
    assert [r["attempts"] for r in records[:4]] == [2] * 4 and [r["attempts"] for r in records[4:]] == [1] * 4
    assert len({r["partial"] for r in records}) == 2
    assert_identical(out, reference(records, tmp_path))
    client.wait_for_workers(2, timeout=60)


def test_a_lost_attempts_partial_is_never_merged(batches, tmp_path):
    """A group run twice (the first attempt's result lost with its worker after its partial was
    written): each attempt writes files of its own, and only the partial named in the records
    that came back is read."""
    _, tasks = batches["find_faces"]
    items = list(enumerate(tasks[:4]))
    (tmp_path / "tasks").mkdir()
    lost = run_group(FIND_FACES, items, str(tmp_path / "tasks"), premerge=True)
    kept = run_group(FIND_FACES, items, str(tmp_path / "tasks"), premerge=True)
    assert lost[0]["partial"] != kept[0]["partial"]
    lost_files = sorted((tmp_path / "tasks" / FOLDER).glob(Path(lost[0]["partial"]).stem + ".*"))
    assert len(lost_files) == 3                               # EPC, HDF5, manifest
    before = {p: p.read_bytes() for p in lost_files}
    Path(lost[0]["partial"]).write_bytes(b"not an EPC: merging it would fail")
    assert_identical(recombined(kept, tmp_path), reference(kept, tmp_path))
    assert all(p.read_bytes() == before[p] for p in lost_files[1:])    # never written by the launcher


@pytest.mark.parametrize("partial_gone", [False, True])
def test_resume_mid_group_merges_each_task_once(batches, tmp_path, partial_gone):
    """The launcher was killed after journaling two of a group's four records: the resumed run
    merges those two from the old group's partial (or, when that file is gone, from their own
    files) and the other two from their new run; no part twice, resqpy's model."""
    _, tasks = batches["find_faces"]
    tasks = tasks[:8]
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    out = tmp_path / "out" / "out.epc"
    out.parent.mkdir()
    first = run_group(FIND_FACES, list(enumerate(tasks[:4])), str(run_dir), premerge=True)
    journal = Journal(out, "digest", run_dir, len(tasks))
    for r in first[:2]:
        journal.record(r)
    journal.close()
    if partial_gone:
        Path(first[0]["partial"]).unlink()
    journal = Journal(out, "digest", run_dir, len(tasks))
    try:
        done = journal.done
        assert sorted(done) == [0, 1]
        assert all(("partial" in r) != partial_gone for r in done.values())
        recombiner = Recombiner(out, task_directory=run_dir)
        for i in sorted(done):
            recombiner.offer(i, done[i]["epc_file"], done[i]["uuid_list"], done[i].get("partial"))
        rest = run_group(FIND_FACES, list(enumerate(tasks))[2:4], str(run_dir), premerge=True) + \
            run_group(FIND_FACES, list(enumerate(tasks))[4:], str(run_dir), premerge=True)
        for r in rest:
            recombiner.offer(r["index"], r["epc_file"], r["uuid_list"], r["partial"])
        recombiner.publish()
    finally:
        journal.close()
    records = [done[0], done[1], *rest]
    assert_identical(out, reference(records, tmp_path))


def test_launch_killed_after_a_group_resumes_from_its_partial(slow, tmp_path):
    """`resqmp launch` in groups of 4, the launcher SIGKILLed once a group is journaled: the same
    command resumes, merges the journaled tasks from their group's partial without running them
    again, and gives resqpy's model; --keep-task-files keeps the tasks' files and the partials."""
    import os
    import signal
    from epc_compare import content
    from proc_watch import new_marker, start_launch, wait_for, wait_until_gone
    from test_reliability import journal_records
    out = tmp_path / "faults.epc"
    marker = new_marker()
    proc = start_launch(slow["batch"], out, "--workers", "2", "--set", "tasks.group_size=4", "--set", "tasks.premerge=true",
                        marker=marker)
    wait_for(lambda: len(journal_records(out)) >= 4, what="a first group's results")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    records = journal_records(out)
    done_before = {r["index"] for r in records if r["success"]}
    # a group's records are journaled one by one: the kill may land between two of them
    assert 4 <= len(done_before) <= 8 and all(r.get("partial") for r in records)
    assert wait_until_gone(marker) == []
    proc2 = start_launch(slow["batch"], out, "--workers", "2", "--set", "tasks.group_size=4", "--set", "tasks.premerge=true",
                         "--keep-task-files")
    stdout, stderr = proc2.communicate(timeout=300)
    assert proc2.returncode == 0, stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert {t["index"] for t in report["tasks"] if t["resumed"]} == done_before
    assert report["totals"]["succeeded"] == 8
    assert content(out) == slow["reference"]
    partials = list(Path(report["task_directory"]).glob(f"{FOLDER}/*.epc"))
    complete = [p for p in partials if manifest_of(p).exists()]
    # the first run's partials it journaled are kept whole, and the second run wrote its own for
    # what the first did not journal (nothing when the kill came after the last record)
    named = {r["partial"] for r in records if r["success"]}
    assert named <= {str(p) for p in complete} and len(complete) >= 2
    # a partial without its manifest is only one a worker was writing when the first run was
    # killed: a group the first run did not journal whole (never read; kept as asked)
    unfinished = {f"g{i // 4 * 4:07d}-{i // 4 * 4 + 3:07d}" for i in range(8) if i not in done_before}
    assert all(p.name.rsplit("-", 1)[0] in unfinished for p in partials if p not in complete)


def test_premerge_setting_decides_where_partials_are_made(faults_batch, tmp_path):
    """tasks.premerge: true makes partials on every worker; false never; auto (the default) only on
    workers on another host than the launcher's, so none with the local backend, whose workers
    share the launcher's machine (there a partial only adds work). The model is the same."""
    from conftest import run_resqmp
    from epc_compare import content
    runs = {}
    for premerge in ("true", "false", None):
        out = tmp_path / str(premerge) / "faults.epc"
        out.parent.mkdir()
        setting = ("--set", f"tasks.premerge={premerge}") if premerge else ()
        run_resqmp("launch", "--profile", "local", "--workers", "2", "--set", "tasks.group_size=3", *setting,
                   "--keep-task-files", "--batch", faults_batch, "--output", out, check=0)
        report = json.loads(out.with_name("faults.report.json").read_text())
        runs[premerge] = (content(out), list(Path(report["task_directory"]).glob(f"{FOLDER}/*.epc")))
    assert runs["true"][0] == runs["false"][0] == runs[None][0]
    assert len(runs["true"][1]) == 2 and runs["false"][1] == [] and runs[None][1] == []   # 6 tasks: two groups of 3


@pytest.fixture(scope="module")
def faults_batch(tmp_path_factory):
    from resqmp.example import write_example
    return write_example(tmp_path_factory.mktemp("faults6"), surfaces=6)["batch"]
