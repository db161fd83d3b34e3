"""The drop-in on a cluster the user started (resqpy's tutorial: a plain LocalCluster): resqpy's
numba cache is turned on in its workers and filled by one of them before the batch, the others
load it (numba's own counters say so), and a choice already in the workers' environment wins."""
from __future__ import annotations

import os

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
    assert len(warmed) == 2 and all(w == ["find_faces"] for w in warmed.values())
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
