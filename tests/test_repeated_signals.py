"""Ctrl-C or SIGTERM delivered several times in a row (an impatient user, a scheduler that
repeats its signal): one clean teardown, exit 130, no traceback, nothing left running."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from proc_watch import new_marker, start_launch, wait_for, wait_until_gone
from resqmp.errors import ExitCode


def results_in_journal(out) -> int:
    path = out.with_name(out.stem + ".journal.jsonl")
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines()[1:] if line.strip() and json.loads(line))


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
@pytest.mark.parametrize("gap", [0.05, 0.5])
def test_repeated_signals_tear_down_once_and_exit_130(slow, tmp_path, how, gap):
    out = tmp_path / "faults.epc"
    marker = new_marker()
    proc = start_launch(slow["batch"], out, marker=marker)
    wait_for(lambda: results_in_journal(out) >= 1, what="a first result")
    for _ in range(5):
        try:
            if how == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)      # a terminal's Ctrl-C reaches the whole group
            else:
                os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            break
        time.sleep(gap)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), stderr
    assert wait_until_gone(marker, timeout=60) == []     # no worker, no nanny, nothing left
    assert not out.exists()
    assert not list(tmp_path.glob(".faults.staging-*"))
