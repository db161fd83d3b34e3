"""`launch` and `profiles check` handle Ctrl-C and SIGTERM while they run; called in-process
(click's CliRunner, a notebook calling resqmp.cli.main), they give the caller its own handlers
and sys.unraisablehook back when they return, whether they succeeded or refused their input."""
from __future__ import annotations

import signal
import sys
import time

import pytest
from click.testing import CliRunner

from resqmp.cli import main


def mine(signum, frame):          # the caller's own handler
    raise RuntimeError("the caller's")


def my_hook(args):                # the caller's own unraisable hook
    sys.__unraisablehook__(args)


@pytest.fixture
def callers_handlers():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    for sig in before:
        signal.signal(sig, mine)
    sys.unraisablehook = my_hook
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)
    sys.unraisablehook = hook


@pytest.mark.parametrize("args", [
    ["launch", "--profile", "local", "--batch", "no-such-batch.yaml", "--output", "out.epc"],
    ["profiles", "check", "no-such-profile"],
])
def test_the_callers_handlers_are_back_after_the_command(tmp_path, monkeypatch, callers_handlers, args):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code not in (0, None) and "resqmp: error:" in result.output, result.output
    assert signal.getsignal(signal.SIGINT) is mine
    assert signal.getsignal(signal.SIGTERM) is mine
    assert sys.unraisablehook is my_hook
    assert list(tmp_path.iterdir()) == []


def test_the_callers_handlers_are_back_after_an_interrupted_command(tmp_path, monkeypatch, callers_handlers):
    # a Ctrl-C after the check's first stage: the check stops (exit 130) and, in-process, the
    # caller's handlers are back (only the `resqmp` console script keeps ignoring them as it exits)
    import os
    import resqmp.doctor as doctor
    printing = doctor._print

    def print_then_signal(console, outcome):
        printing(console, outcome)
        if outcome.stage == "profile":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(doctor, "_print", print_then_signal)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["profiles", "check", "local"])
    assert result.exit_code == 130, result.output
    assert signal.getsignal(signal.SIGINT) is mine
    assert signal.getsignal(signal.SIGTERM) is mine
    assert sys.unraisablehook is my_hook


def test_an_interrupted_command_leaves_no_signal_behind_for_the_callers_next_work(tmp_path, monkeypatch):
    # the caller's next resqmp work in the same process (here the API's poll point) is not
    # interrupted by the command's old signal
    from resqmp import interrupts
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with interrupts.handling("stopping"):
            import os
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    interrupts.raise_if_requested()          # nothing pending: returns
    assert not interrupts.requested()
