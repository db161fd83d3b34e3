"""A group sent again because its worker died after writing the group's partial (its records lost
with it): the lost attempt's partial is never read (each attempt writes files of its own), and
once the group's records came back from the attempt that finished, the launcher removes the lost
attempt's files from the run's groups/ (they used to stay until the run directory went, taking as
much room as the group's outputs). Only files no record names, in this run's private groups/;
--keep-task-files keeps them, as it keeps every task file.

The death is a real one at a chosen moment: a worker plugin SIGKILLs its own process the moment the
group's first attempt finishes on it (its partial written, its records not yet sent)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from conftest import run_resqmp
from resqmp.premerge import FOLDER
from test_reliability import journal_records


class DieOnceAfterGroup(WorkerPlugin):
    """Kills its worker process when the first attempt of the Dask task of tasks 0-3 finishes there
    (marker: once per test, whichever worker)."""
    name = "test-die-once-after-group"

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if start == "executing" and finish == "memory" and str(key).endswith("-0-3-a1") \
                and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def eight_faults(tmp_path_factory):
    """8 find-faces tasks, the last of which fails (its surface is the grid: resqpy asserts), so
    the run ends with exit 3 and keeps its task directory for a look."""
    from resqmp.example import write_example
    info = write_example(tmp_path_factory.mktemp("lost-attempts"), surfaces=8)
    data = yaml.safe_load(Path(info["batch"]).read_text())
    data["tasks"][7]["surface_uuid"] = info["grid_uuid"]
    batch = Path(info["batch"]).with_name("batch-last-fails.yaml")
    batch.write_text(yaml.safe_dump(data, sort_keys=False))
    return batch


@pytest.fixture
def dying_external(tmp_path):
    """A cluster started here (the external backend's: workers outlive the run) whose worker
    running the first attempt of tasks 0-3 dies right after it. Yields (profile, marker)."""
    marker = tmp_path / "died"
    shared = tmp_path / "shared"
    shared.mkdir()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.register_plugin(DieOnceAfterGroup(str(marker)))
        profile = tmp_path / "external.yaml"
        profile.write_text(yaml.safe_dump({
            "extends": "external", "cluster": {"address": cluster.scheduler_address},
            "scaling": {"worker_timeout": 60}, "storage": {"shared_directory": str(shared)}}))
        yield profile, marker


def launch(profile, batch, out, *extra):
    return run_resqmp("launch", "--profile", profile, "--batch", batch, "--output", out, "--set", "tasks.group_size=4",
                      "--set", "tasks.premerge=true", *extra, check=3)


def stems(folder: Path) -> set[str]:
    return {p.name.split(".", 1)[0] for p in folder.iterdir()}


@pytest.mark.parametrize("keep", [False, True])
def test_a_lost_attempts_partial_is_removed_once_its_group_came_back(eight_faults, dying_external, tmp_path, keep):
    profile, marker = dying_external
    out = tmp_path / "faults.epc"
    launch(profile, eight_faults, out, *(["--keep-task-files"] if keep else []))
    assert marker.exists()                  # the worker died as planned, after the partial was written
    report = json.loads(out.with_name("faults.report.json").read_text())
    tasks = report["tasks"]
    assert [t["success"] for t in tasks] == [True] * 7 + [False]
    assert [t["attempts"] for t in tasks[:4]] == [2] * 4 and all(t["lost_workers"] for t in tasks[:4])
    # the journal (kept: a task failed) holds each record as the launcher merged it, partial named
    named = {Path(r["partial"]).stem for r in journal_records(out) if r.get("partial")}
    assert len(named) == 2                  # 0-3 from the attempt that came back, 4-6
    groups = Path(report["task_directory"]) / FOLDER
    lost = stems(groups) - named
    if keep:
        assert len(lost) == 1 and next(iter(lost)).startswith("g0000000-0000003-")
        assert len(list(groups.glob(f"{next(iter(lost))}.*"))) == 3       # EPC, HDF5, manifest
    else:
        assert lost == set()
    for stem in named:                      # the partials the journal names stay for a resume
        assert {p.suffix for p in groups.glob(f"{stem}.*")} == {".epc", ".h5", ".json"}
