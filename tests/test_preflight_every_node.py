"""preflight.check_workers_see on a real LocalCluster: what it does when fewer workers join than
planned (the rest of a site's jobs still queue). The multi-node behaviour itself is tested on the
two-node SLURM (test_hpc_multinode.py)."""
from __future__ import annotations

import logging
import socket

from distributed import Client, LocalCluster

from resqmp.preflight import check_workers_see


def test_fewer_workers_than_planned_checks_those_that_came_and_goes_on(tmp_path, caplog):
    inputs = [str(tmp_path / "in.epc")]
    (tmp_path / "in.epc").write_text("x")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client, caplog.at_level(logging.WARNING, logger="resqmp"):
        seen = check_workers_see(client, tmp_path, inputs, planned=3, timeout=1)
    assert seen["token_seen"] and seen["shared_writable"] and not seen["missing_inputs"]
    assert seen["hosts"] == [socket.gethostname()]
    assert "1 of 3 planned workers joined" in caplog.text
    assert not list(tmp_path.glob(".resqmp-probe-*"))          # the token file is gone
