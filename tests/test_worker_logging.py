"""The logging resqmp sets on workers it did not start (an external scheduler's, which outlive the
run): each run's worker log goes to that run's `logging.file`, and once the run ends the workers'
logging is as it was before it (no handler, level or format of ours left behind)."""
from __future__ import annotations

import logging

import pytest
from distributed import Client, LocalCluster

from resqmp.worker_env import LoggingPlugin, register_logging
from test_site_defects import external_cluster  # noqa: F401 - a fixture


def _log(message: str) -> None:
    logging.getLogger("resqpy.resqmp_test").warning(message)


def _state(dask_worker=None) -> dict:
    root = logging.getLogger()
    return {"level": root.level,
            "handlers": [(h.get_name(), type(h).__name__, getattr(h, "baseFilename", None)) for h in root.handlers],
            "formats": [h.formatter._fmt if h.formatter else None for h in root.handlers],
            "resqpy": logging.getLogger("resqpy").level, "numba": logging.getLogger("numba").level}


@pytest.fixture(scope="module")
def long_lived():
    """A cluster resqmp did not start: it stays up across runs."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster


def _profile(file, level="INFO"):
    class Profile:
        logging = {"level": level, "file": str(file), "format": "%(levelname)s %(message)s"}
    return Profile()


def test_each_run_logs_to_its_own_file_and_leaves_the_workers_as_they_were(long_lived, tmp_path):
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    with Client(long_lived) as client:
        before = client.run(_state)
        withdraw = register_logging(client, _profile(first), workers_outlive_run=True)
        client.submit(_log, "from run one", pure=False).result()
        withdraw()
        client.submit(_log, "between the runs", pure=False).result()
    with Client(long_lived) as client:
        withdraw = register_logging(client, _profile(second, level="DEBUG"), workers_outlive_run=True)
        client.submit(_log, "from run two", pure=False).result()
        withdraw()
        after = client.run(_state)
    assert "from run one" in first.read_text() and "from run two" not in first.read_text()
    assert "from run two" in second.read_text() and "from run one" not in second.read_text()
    assert "between the runs" not in first.read_text() + second.read_text()
    assert after == before


def test_a_run_killed_before_its_end_leaves_no_handler_to_the_next(long_lived, tmp_path):
    """A launcher SIGKILLed keeps its plugin on the scheduler (nobody withdrew it): the next run
    removes it, so the killed run's file stops growing."""
    killed, later = tmp_path / "killed.log", tmp_path / "later.log"
    with Client(long_lived) as client:
        before = client.run(_state)
    client = Client(long_lived)
    register_logging(client, _profile(killed), workers_outlive_run=True)    # never withdrawn
    client.close()
    with Client(long_lived) as client:
        withdraw = register_logging(client, _profile(later), workers_outlive_run=True)
        client.submit(_log, "from the later run", pure=False).result()
        withdraw()
        after = client.run(_state)
    assert "from the later run" in later.read_text()
    assert "from the later run" not in killed.read_text()
    assert after == before


def test_the_same_plugin_set_up_again_replaces_its_file(tmp_path):
    """A worker given a new LoggingPlugin under the same name (distributed tears the old one down
    first) writes to the new file only."""
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.register_plugin(LoggingPlugin(file=str(one)), name="resqmp-logging")
        client.submit(_log, "first", pure=False).result()
        client.register_plugin(LoggingPlugin(file=str(two)), name="resqmp-logging")
        client.submit(_log, "second", pure=False).result()
    assert "second" in two.read_text() and "second" not in one.read_text()


def test_launches_on_an_external_scheduler_each_log_to_their_own_file(work, tmp_path, external_cluster):
    """`resqmp launch --profile external` twice on the same user's cluster, each with its own
    logging.file: the second run's workers log to the second file only, and after both the worker
    has no handler of resqmp's left (the first run's file no longer grows)."""
    from test_site_defects import launch
    files = [tmp_path / "one.log", tmp_path / "two.log"]
    for i, file in enumerate(files):
        launch("external", work / "batch.yaml", tmp_path / f"o{i}.epc", "--set", f"cluster.address={external_cluster}",
               "--set", f"logging.file={file}", "--set", "logging.level=DEBUG", check=0)
    first, second = (f.read_text() for f in files)
    assert first and second
    with Client(external_cluster) as client:
        # client.run, not submit: the scheduler started outside the tests cannot import this module
        (state,) = client.run(_state).values()
        client.run(_log, "after both runs")
    assert not [h for h in state["handlers"] if h[0] and h[0].startswith("resqmp")]
    assert files[0].read_text() == first and files[1].read_text() == second


def _root_level(dask_worker=None) -> int:
    return logging.getLogger().level


def test_overlapping_launches_keep_their_own_settings_and_the_last_restores_the_workers(long_lived, tmp_path):
    """Launch A, then B on the same cluster, A ending first: B's level and file stay while B runs,
    A's file stops growing at A's end, and after B the worker's logging is as before A."""
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    with Client(long_lived) as client_a, Client(long_lived) as client_b:
        before = client_a.run(_state)
        withdraw_a = register_logging(client_a, _profile(a, level="INFO"), workers_outlive_run=True)
        withdraw_b = register_logging(client_b, _profile(b, level="DEBUG"), workers_outlive_run=True)
        client_b.run(_log, "both up")
        withdraw_a()
        assert set(client_b.run(_root_level).values()) == {logging.DEBUG}
        client_b.run(_log, "only b up")
        withdraw_b()
        after = client_b.run(_state)
    assert "both up" in a.read_text() and "only b up" not in a.read_text()
    assert "both up" in b.read_text() and "only b up" in b.read_text()
    assert after == before


def test_one_file_for_two_launches_gets_each_line_once(long_lived, tmp_path):
    shared = tmp_path / "shared.log"
    with Client(long_lived) as client_a, Client(long_lived) as client_b:
        before = client_a.run(_state)
        withdraw_a = register_logging(client_a, _profile(shared), workers_outlive_run=True)
        withdraw_b = register_logging(client_b, _profile(shared), workers_outlive_run=True)
        client_a.run(_log, "said once")
        withdraw_b()
        client_a.run(_log, "a still logs")
        withdraw_a()
        after = client_a.run(_state)
    assert shared.read_text().count("said once") == 1 and "a still logs" in shared.read_text()
    assert after == before
