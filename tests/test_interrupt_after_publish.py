"""A Ctrl-C or SIGTERM that comes once the recombined model is being put in place does not cut the
finish: OUT, its report, the journal and the task files end consistent, and the run exits as a
finished run. Cut, it left the new model at OUT with the old run's report and said "nothing
written at OUT; run the same command again to resume" (or removed the journal first, so that the
same command ran every task again).

The signal is sent by the launcher to itself from an audit hook, at the moment it starts removing
a folder after the publish (its staging folder, or the run's task folder): deterministic, where a
signal from outside would race a short window."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import ALLOW_TEST_WRAPPERS, BIN, TESTS
from epc_compare import content
from resqmp.errors import ExitCode

RUNNER = r'''
import os, signal, sys

def main():
    fragment = os.environ["RESQMP_TEST_SIGINT_AT_RMTREE"]
    out = os.environ["RESQMP_TEST_OUT"]
    fired = []

    def hook(event, args):       # OUT there: the publish has put the model in place (preflight's probe also removes a staging folder)
        if not fired and event == "shutil.rmtree" and fragment in os.fspath(args[0]) and os.path.exists(out):
            fired.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    sys.addaudithook(hook)
    from resqmp.cli import console_main as resqmp_main
    sys.argv = ["resqmp", *sys.argv[1:]]
    resqmp_main()

if __name__ == "__main__":
    main()
'''


@pytest.mark.parametrize("where", [".staging-", ".resqmp-tasks"])
def test_a_signal_during_the_finish_leaves_a_finished_run(slow, tmp_path, where):
    out = tmp_path / "faults.epc"
    runner = tmp_path / "run_with_sigint_at_rmtree.py"
    runner.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "RESQMP_TEST_SIGINT_AT_RMTREE": where,
           "RESQMP_TEST_OUT": str(out)}
    batch = slow["batch"].with_name("batch-fast.yaml")
    batch.write_text(slow["batch"].read_text().replace("delay: 1.0", "delay: 0.0"))
    proc = subprocess.run([str(BIN / "python"), str(runner), "launch", "--profile", "local", "--batch", str(batch),
                           "--output", str(out), *ALLOW_TEST_WRAPPERS], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert "resqmp: finishing:" in proc.stderr, proc.stderr        # the signal came, during the finish
    assert proc.returncode == ExitCode.OK, proc.stdout + proc.stderr
    assert "interrupted" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert content(out) == slow["reference"]
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert report["exit_code"] == 0 and len(report["tasks"]) == 8 and all(t["success"] for t in report["tasks"])
    assert not out.with_name("faults.journal.jsonl").exists()
    assert not list(tmp_path.glob(".faults.staging-*")) and not (tmp_path / ".resqmp-tasks").exists()
