"""What the launcher does to keep its own CPU per task low (issue 11), checked by state: the
settings reach the servers it starts, and its journal stays complete and resumable."""
from __future__ import annotations

import json

from conftest import run_resqmp


def test_system_monitor_and_tick_are_slower_in_what_the_launcher_starts(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("wrapper: wrappers_for_tests:monitor_interval_wrapper\ntasks:\n  - {record_file: rec.json}\n")
    run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", tmp_path / "o.epc", check=0)
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec == {"worker": [2000, 200], "scheduler": [2000, 200]}     # distributed's defaults: 500, 20 ms


KILLED_WHILE_RECORDING = """
import os, signal, sys
from pathlib import Path
from resqmp.journal import Journal
run = Path(sys.argv[2])
journal = Journal(Path(sys.argv[1]), "digest", run, 500)
for i in range(500):
    epc = run / f"t{i}" / "wrapper.epc"      # a success counts as done only with its output there
    epc.parent.mkdir(parents=True)
    epc.write_bytes(b"")
    journal.record({"index": i, "success": True, "epc_file": str(epc), "uuid_list": [], "traceback": "x"})
os.kill(os.getpid(), signal.SIGKILL)      # no close: the last fsync has not run
"""


def test_a_killed_launcher_loses_no_journal_line(tmp_path):
    import subprocess
    import sys
    from resqmp.journal import Journal
    out = tmp_path / "out.epc"
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_RECORDING, str(out), str(tmp_path / "run")],
                          timeout=120)
    assert proc.returncode == -9
    journal = Journal(out, "digest", tmp_path / "run", 500)
    try:
        assert sorted(journal.done) == list(range(500))
        assert journal.warning() is None
        assert all("traceback" not in r for r in journal.done.values())
    finally:
        journal.close()


def test_intervals_in_the_sites_dask_config_are_kept(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("wrapper: wrappers_for_tests:monitor_interval_wrapper\ntasks:\n  - {record_file: rec.json}\n")
    run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", tmp_path / "o.epc", check=0,
               env={"DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "750ms",
                    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "30ms"})
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec == {"worker": [750, 30], "scheduler": [750, 30]}
