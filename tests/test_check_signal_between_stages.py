"""A Ctrl-C between two stages of `profiles check` (while a stage's line is printed, or while the
dask config is snapshotted) still runs the teardown stage.

Signals are asynchronous: one can land anywhere in the check's own loop, not only inside a
stage. Landed outside a stage, it used to escape the loop, so the teardown stage never ran: the
cluster was left to distributed's exit hooks and the check's folder stayed. The runner sends the
process its own SIGINT from inside the printing of a chosen stage's line, which makes "a signal
between stages" happen every time."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import BIN, TESTS
from proc_watch import new_marker, wait_until_gone
from resqmp.errors import ExitCode
from test_profiles_check import stages

# Runs `resqmp profiles check local`; SIGINT lands while the line of stage AFTER is printed.
RUNNER = r'''
import os, signal, sys, time


def main():
    import resqmp.cli as cli
    after = os.environ["RESQMP_TEST_SIGINT_AFTER"]
    command = cli.profiles_check.callback

    def check_with_a_signal_after(*args, **kwargs):
        # imported where the command imports it: after the CLI has set distributed's log levels
        # (imported earlier, distributed would log at INFO, tracebacks of the teardown included)
        import resqmp.doctor as doctor
        printing = doctor._print

        def print_then_signal(console, outcome):
            printing(console, outcome)
            if outcome.stage == after:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)             # the handler runs here, between two stages

        doctor._print = print_then_signal
        return command(*args, **kwargs)

    cli.profiles_check.callback = check_with_a_signal_after
    sys.argv = ["resqmp", "profiles", "check", "local"]
    cli.console_main()


if __name__ == "__main__":        # local workers are spawned: they import this file again
    main()
'''


@pytest.mark.parametrize("after", ["profile", "joined", "inputs"])
def test_a_ctrl_c_between_stages_still_tears_down(tmp_path, after):
    runner = tmp_path.parent / f"{tmp_path.name}-runner.py"       # the check's folder stays empty
    runner.write_text(RUNNER)
    marker = new_marker()
    env = {**os.environ, **marker, "PYTHONPATH": str(TESTS), "RESQMP_TEST_SIGINT_AFTER": after}
    proc = subprocess.run([str(BIN / "python"), str(runner)], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=600)
    seen = stages(proc.stdout)
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), proc.stderr
    # the stage after the signal is the one interrupted, the rest skipped, and the teardown ran
    names = list(seen)
    assert names[-1] == "teardown" and seen["teardown"][0] == "ok", proc.stdout
    following = names[names.index(after) + 1]
    assert seen[following][0] == "interrupted", proc.stdout
    assert all(seen[s][0] == "skipped" for s in names[names.index(following) + 1:-1]), proc.stdout
    assert wait_until_gone(marker, timeout=60) == []              # no worker process left
    assert list(tmp_path.iterdir()) == []                          # the check's folder removed
