"""What the launcher does to keep its own CPU per task low (issue 11), checked by state: the
settings reach the servers it starts, and its journal stays complete and resumable."""
from __future__ import annotations

import json

from conftest import run_resqmp


def test_system_monitor_samples_every_two_seconds_in_what_the_launcher_starts(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("wrapper: wrappers_for_tests:monitor_interval_wrapper\ntasks:\n  - {record_file: rec.json}\n")
    run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", tmp_path / "o.epc", check=0)
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec == {"worker": 2000, "scheduler": 2000}       # distributed's default: 500 ms
