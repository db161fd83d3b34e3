"""The drop-in on a cluster the user started (resqpy's tutorial: a plain LocalCluster): resqpy's
numba cache is turned on in its workers and filled by one of them before the batch, the others
load it on their first task (numba's own counters say so), a worker whose cache is elsewhere is
warmed before the batch too, and a choice already in the workers' environment wins."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from distributed import Client, LocalCluster

from epc_compare import content, resqpy_reference
from resqmp import warm
from resqmp.api import function_multiprocessing
from resqmp.batch import load
from resqmp.numba_stats import resqpy_numba_stats

CACHE_VARIABLES = ("RESQPY_NUMBA_CACHE", "NUMBA_CACHE_DIR", "NUMBA_NUM_THREADS")


def _warmed() -> list[str]:
    return sorted(warm._warmed)


@pytest.fixture
def users_environment(monkeypatch, tmp_path):
    """The user's script: no resqmp environment; HOME in tmp_path, so the default cache is new."""
    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home" / ".cache" / "resqmp" / "numba"


def _kwargs(example) -> tuple:
    batch = load(example["batch"])
    return batch.function, [dict(t) for t in batch.tasks]


def test_plain_cluster_workers_share_a_cache_filled_once(example, tmp_path, users_environment):
    function, kwargs_list = _kwargs(example)
    ref = tmp_path / "ref" / "ref.epc"
    ref.parent.mkdir()
    assert all(resqpy_reference(example["batch"], ref, ref.parent))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "out.epc"
        assert function_multiprocessing(function, kwargs_list, out, cluster=cluster,
                                        tmp_dir_path=tmp_path) == [True] * len(kwargs_list)
        with Client(cluster, set_as_default=False) as client:
            warmed = client.run(_warmed)
            stats = client.run(resqpy_numba_stats)
    assert content(out) == content(ref)
    # only the first worker warmed before the batch; the other loaded its cache on its first task
    assert sorted(warmed.values()) == [[], ["find_faces"]]
    for s in stats.values():
        assert s["cache_enabled"] is True
        assert s["cache_dir"] == str(users_environment)
    # one worker compiled (its warm-up filled the cache); the other compiled nothing, warm-up or tasks
    assert sorted(s["cache_misses"] == 0 for s in stats.values()) == [False, True]
    assert any(f.suffix == ".nbc" for f in users_environment.rglob("*"))


def test_a_cache_setting_in_the_workers_environment_wins(example, tmp_path, users_environment, monkeypatch):
    monkeypatch.setenv("RESQPY_NUMBA_CACHE", "false")
    function, kwargs_list = _kwargs(example)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert all(function_multiprocessing(function, kwargs_list[:1], tmp_path / "out.epc", cluster=cluster,
                                            tmp_dir_path=tmp_path))
        with Client(cluster, set_as_default=False) as client:
            stats = client.run(resqpy_numba_stats)
            warmed = client.run(_warmed)
    assert [s["cache_enabled"] for s in stats.values()] == [False]
    assert list(warmed.values()) == [["find_faces"]]      # warmed all the same: compiled before the batch
    assert not users_environment.exists()


def _cache_dir() -> str | None:
    return os.environ.get("NUMBA_CACHE_DIR")


def _worker(scheduler: str, env: dict) -> subprocess.Popen:
    """A worker joining the user's cluster from a shell of its own (dask's CLI), with `env`."""
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--nthreads", "1",
                             "--no-dashboard"], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("own_cache", [True, False])
def test_a_worker_whose_cache_the_first_did_not_fill_is_warmed_before_the_batch(tmp_path, users_environment,
                                                                                own_cache):
    """Two workers compiling into one cache at once has crashed numba; a worker with a cache the
    first worker's warm-up did not fill would compile on its first task, beside the others. So it
    is warmed before the batch; a worker sharing the first's cache is not (it only loads)."""
    other_cache = tmp_path / "other-cache"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        env = {"NUMBA_CACHE_DIR": str(other_cache if own_cache else users_environment)}
        worker = _worker(cluster.scheduler_address, env)
        try:
            with Client(cluster, set_as_default=False) as client:
                client.wait_for_workers(2, timeout=120)
                addresses = sorted(client.scheduler_info()["workers"])
                results = warm.warm_users_cluster(
                    client, "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper")
                warmed = client.run(_warmed)
                cache_dirs = client.run(_cache_dir)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    assert sorted(cache_dirs.values()) == sorted({str(other_cache), str(users_environment)} if own_cache
                                                 else [str(users_environment)] * 2)
    if own_cache:
        assert sorted(results) == addresses
        assert all(w == ["find_faces"] for w in warmed.values())
        assert any(f.suffix == ".nbc" for f in other_cache.rglob("*"))     # filled before the batch
    else:
        assert sorted(results) == addresses[:1]
        assert sorted(warmed.values()) == [[], ["find_faces"]]


def test_after_a_first_warm_up_that_failed_the_others_are_warmed_before_the_batch(tmp_path, users_environment):
    """A failed warm-up may leave the shared cache half-filled: the others then warm before the
    batch, taking turns on the cache, rather than all compiling into it on their first tasks."""
    def failing_warm_ups() -> None:
        """This worker's warm-up reports a failure (as a wrapper that raised would), fills nothing.
        Defined here so that it travels by value: importing this module would import resqpy in
        the worker, before its cache is turned on."""
        warm.warm_numba_cache = lambda wrappers=(), tmp_dir=None: {"errors": {w: "RuntimeError: injected"
                                                                            for w in wrappers}}

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            first, second = sorted(client.scheduler_info()["workers"])
            client.run(failing_warm_ups, workers=[first])
            results = warm.warm_users_cluster(
                client, "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper")
            warmed = client.run(_warmed)
            where = client.run(warm.cache_location)
    assert where[first] == where[second] is not None          # one cache, on for both
    assert results[first]["errors"] == {"find_faces": "RuntimeError: injected"}
    assert sorted(results) == [first, second] and not results[second]["errors"]
    assert warmed[second] == ["find_faces"]


def test_workers_that_imported_resqpy_first_get_the_cache_too(example, tmp_path, users_environment):
    """A user's script that imports resqpy at the top is imported again by every worker the
    cluster spawns: resqpy's numba functions exist before the drop-in can set the environment.
    They get the cache all the same: on a first cluster one worker compiles (filling the cache)
    and the other only loads; on a second, fresh cluster no worker compiles anything beyond what
    importing resqpy compiled. Before, every worker of every cluster compiled it all in memory."""
    function, kwargs_list = _kwargs(example)
    ref = tmp_path / "ref" / "ref.epc"
    ref.parent.mkdir()
    assert all(resqpy_reference(example["batch"], ref, ref.parent))

    def import_resqpy() -> None:        # by value: importing this module would import resqpy anyway
        import resqpy.multi_processing  # noqa: F401

    compiled_in_batch = []
    for attempt in (1, 2):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with Client(cluster, set_as_default=False) as client:
                client.run(import_resqpy)
                before = client.run(resqpy_numba_stats)
                out = tmp_path / f"out-{attempt}.epc"
                assert function_multiprocessing(function, kwargs_list, out, cluster=client,
                                                tmp_dir_path=tmp_path) == [True] * len(kwargs_list)
                after = client.run(resqpy_numba_stats)
        assert content(out) == content(ref)
        assert [s["cache_enabled"] for s in before.values()] == [False, False]
        assert all(s["cache_enabled"] is True and s["cache_dir"] == str(users_environment) for s in after.values())
        compiled_in_batch.append(sorted(bool(set(after[w]["compiled"]) - set(before[w]["compiled"]))
                                        for w in after))
    assert compiled_in_batch == [[False, True], [False, False]]
    assert any(f.suffix == ".nbc" for f in users_environment.rglob("*"))
