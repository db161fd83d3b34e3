"""A scheduler resqmp did not start (the `external` backend's, a user's Client in the drop-in) must
have resqmp: distributed unpickles every task graph ON THE SCHEDULER, and resqmp's task functions
travel by reference. Against a real `dask scheduler` that cannot import resqmp (conftest's
scheduler_without_resqmp; its worker has resqmp), resqmp says so in one line before it sends
anything, instead of distributed's "Error during deserialization of the task graph" as an
internal error."""
from __future__ import annotations

import pytest

import resqmp
from conftest import one_error_line, run_resqmp
from resqmp.errors import ClusterError, ExitCode
from resqmp.outputs import written_files

pytestmark = pytest.mark.timeout(300)


def _plugins(client) -> list[str]:
    return client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.worker_plugins))


def _says_what_is_missing(text: str, address: str) -> None:
    assert f"scheduler {address}" in text, text
    assert "cannot import resqmp" in text, text
    assert f"resqmp {resqmp.__version__}" in text, text          # the launcher's, which it needs


def test_launch_on_a_scheduler_without_resqmp_is_one_cluster_error_line(work, tmp_path, scheduler_without_resqmp):
    address, client = scheduler_without_resqmp
    out = tmp_path / "o.epc"
    before = _plugins(client)               # distributed's own (shuffle)
    proc = run_resqmp("launch", "--profile", "external", "--set", f"cluster.address={address}",
                      "--batch", work / "batch.yaml", "--output", out)
    _says_what_is_missing(one_error_line(proc, ExitCode.CLUSTER), address)
    # nothing at OUT's names but the journal (kept, as after any cluster error, for the next run)
    assert [name for name, path in written_files(out).items() if path.exists()] in ([], ["journal"]), \
        list(tmp_path.iterdir())
    # nothing of the launch left on the scheduler (no plugins for its workers), the scheduler still up
    assert _plugins(client) == before
    # the next run on a cluster that has resqmp is not hindered by what this one left
    proc = run_resqmp("launch", "--profile", "local", "--workers", "1", "--batch", work / "batch.yaml",
                      "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()


def test_the_drop_in_on_a_users_client_to_a_scheduler_without_resqmp_raises_cluster_error(
        example, tmp_path, scheduler_without_resqmp):
    address, client = scheduler_without_resqmp
    from resqmp.batch import load
    batch = load(example["batch"])
    mine = tmp_path / "mine"            # (tmp_path holds the fixture's scheduler file)
    mine.mkdir()
    with pytest.raises(ClusterError) as raised:
        resqmp.function_multiprocessing(batch.function, [dict(k) for k in batch.tasks], mine / "o.epc",
                                        cluster=client, tmp_dir_path=mine)
    assert "\n" not in str(raised.value)
    _says_what_is_missing(str(raised.value), address)
    assert list(mine.iterdir()) == []           # no model, no task folder
    assert client.status == "running"               # the user's client is theirs: not closed


# ---- a scheduler with another resqmp: a warning, unless it lacks what resqmp submits -------------

def test_launch_on_a_scheduler_with_another_resqmp_version_warns_and_runs(work, tmp_path, scheduler_process):
    address, _ = scheduler_process("import resqmp; resqmp.__version__ = '0.0.1'")
    out = tmp_path / "o.epc"
    proc = run_resqmp("launch", "--profile", "external", "--set", f"cluster.address={address}",
                      "--set", "tasks.retries=3", "--batch", work / "batch.yaml", "--output", out)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("resqmp: warning: ")]
    assert len(warnings) == 1, proc.stderr
    assert f"scheduler {address} has resqmp 0.0.1" in warnings[0]
    assert f"this launcher resqmp {resqmp.__version__}" in warnings[0]
    assert out.exists()


def test_launch_on_a_scheduler_whose_resqmp_lacks_a_task_function_is_one_cluster_error_line(
        work, tmp_path, scheduler_process):
    address, client = scheduler_process("import resqmp, resqmp.execute; resqmp.__version__ = '0.0.1'; "
                                        "del resqmp.execute.run_group")
    out = tmp_path / "o.epc"
    proc = run_resqmp("launch", "--profile", "external", "--set", f"cluster.address={address}",
                      "--batch", work / "batch.yaml", "--output", out)
    line = one_error_line(proc, ExitCode.CLUSTER)
    assert f"scheduler {address} has resqmp 0.0.1" in line and "lacks resqmp.execute.run_group" in line, line
    assert f"same resqmp as this launcher, resqmp {resqmp.__version__}" in line, line
    assert not out.exists()
