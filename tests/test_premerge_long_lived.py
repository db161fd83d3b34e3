"""Workers that outlive a run (the external backend: the user's own cluster; the drop-in on a
cluster the user keeps): a groups/ folder a worker refused in one run is said again in the next
run that uses that run directory (a resume, or a new run of the same OUT), once per run and
worker, not once per group. A worker used to stay silent about it for the rest of its life, so a
later run lost its partials with no word in its log of why."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from resqmp.execute import run_on_client
from resqmp.premerge import FOLDER
from test_premerge import FIND_FACES, batches  # noqa: F401 - batches is a fixture

_LOGGER = "resqmp.premerge"
_HANDLER = "test-premerge-long-lived"


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.set_name(_HANDLER)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _keep_warnings(dask_worker=None) -> None:
    """On each worker: keep resqmp.premerge's warnings where taken_warnings finds them."""
    logger = logging.getLogger(_LOGGER)
    if not any(h.get_name() == _HANDLER for h in logger.handlers):
        logger.addHandler(_Kept())
    logger.setLevel(logging.WARNING)


def _taken_warnings(dask_worker=None) -> list[str]:
    handler = next(h for h in logging.getLogger(_LOGGER).handlers if h.get_name() == _HANDLER)
    messages, handler.messages = handler.messages, []
    return messages


@pytest.fixture(scope="module")
def long_lived():
    """One worker process that outlives every run of the module, as a user's own cluster's do."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.run(_keep_warnings)
        yield client


def one_run(client, tasks, run_dir: Path) -> tuple[list[dict], list[str]]:
    """One run (its own key prefix, as every launch and drop-in call has) in groups of 2 with
    partials; its records and the warnings its worker logged meanwhile."""
    records = {}
    run_on_client(client, FIND_FACES, dict(enumerate(tasks)), str(run_dir), lambda r: records.setdefault(r["index"], r),
                  group_size=2, premerge=True)
    warnings = [m for ms in client.run(_taken_warnings).values() for m in ms]
    return [records[i] for i in sorted(records)], warnings


def test_a_refused_groups_folder_is_said_again_in_each_run(batches, long_lived, tmp_path):
    _, tasks = batches["find_faces"]
    tasks = tasks[:6]
    run_dir = tmp_path / "tasks"
    (run_dir / FOLDER).mkdir(parents=True)
    os.chmod(run_dir / FOLDER, 0o777)           # a project folder's default: anyone may write
    for run in ("first", "resumed"):
        records, warnings = one_run(long_lived, tasks, run_dir)
        assert all(r["success"] for r in records)
        assert [r.get("partial") for r in records] == [None] * 6, run
        said = [w for w in warnings if str(run_dir / FOLDER) in w and "writable" in w]
        assert len(said) == 1, (run, warnings)          # once per run on its one worker, not per group
    # the user makes groups/ private: the same worker makes partials there again
    os.chmod(run_dir / FOLDER, 0o700)
    records, warnings = one_run(long_lived, tasks, run_dir)
    assert warnings == []
    assert all(Path(r["partial"]).parent == run_dir / FOLDER for r in records)
