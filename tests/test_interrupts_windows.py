"""resqmp.interrupts keeps its bookkeeping right wherever a signal lands.

These tests deliver SIGINT at every line of interrupts' context managers in turn, up to their
`finally` (a trace function sends it there, so Python raises the KeyboardInterrupt at that line),
and check that the shield depth and the message are what they must be afterwards. A shield left
at -1 (a signal between saving the depth and entering the `try`) would make every later command
of the process unstoppable. The `finally` clauses are left out: they only assign (CPython runs a
signal handler at a call or a backward jump, never between two plain assignments), and nothing
written in Python can restore state in a `finally` that a signal may cut before its first line."""
from __future__ import annotations

import inspect
import os
import signal
import sys

import pytest

from resqmp import interrupts


def lines_of(function) -> list[int]:
    """The lines of `function`'s body before its `finally:`."""
    function = getattr(function, "__wrapped__", function)
    source, first = inspect.getsourcelines(function)
    end = first + next(i for i, text in enumerate(source) if text.strip() == "finally:")
    code = function.__code__
    return sorted({line for _, _, line in code.co_lines() if line is not None and first < line < end})


def enter_with_a_signal_at(function, line: int, *args) -> list[int]:
    """`with function(*args): pass`, with SIGINT sent when `function`'s frame reaches `line` (a trace
    function sends it there, so Python raises the KeyboardInterrupt at that line); the lines it
    was sent at ([] if the frame never reached `line`)."""
    code = getattr(function, "__wrapped__", function).__code__
    fired = []

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line and not fired:
            fired.append(line)
            os.kill(os.getpid(), signal.SIGINT)
        return local

    sys.settrace(lambda frame, event, arg: local if frame.f_code is code else None)
    try:
        with function(*args):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    return fired


@pytest.mark.parametrize("line", lines_of(interrupts.interruptible))
def test_a_signal_anywhere_in_interruptible_leaves_the_shield_as_it_was(line):
    with interrupts.handling("stopping"):
        with interrupts.shielded():
            fired = enter_with_a_signal_at(interrupts.interruptible, line)
            assert interrupts._state.shield == 1, (line, fired)
        assert interrupts._state.shield == 0, (line, fired)


@pytest.mark.parametrize("line", lines_of(interrupts.shielded))
def test_a_signal_anywhere_in_shielded_leaves_the_shield_and_message_as_they_were(line):
    with interrupts.handling("stopping"):
        fired = enter_with_a_signal_at(interrupts.shielded, line, "finishing")
        assert interrupts._state.shield == 0, (line, fired)
        assert interrupts._state.message == b"stopping\n", (line, fired)


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_signal_while_handling_gives_the_handlers_back_changes_nothing(monkeypatch, interrupted):
    """A SIGTERM that arrives while handling() is putting the caller's handlers back (after the
    first is back, before the second): it neither escapes as a KeyboardInterrupt nor leaves one
    handler resqmp's and the other ignored; the caller gets both its handlers, its hook, and no
    pending signal."""
    def mine(signum, frame):
        pass

    def my_hook(args):
        sys.__unraisablehook__(args)

    before = {sig: signal.getsignal(sig) for sig in interrupts.SIGNALS}
    hook = sys.unraisablehook
    real_signal = signal.signal
    for sig in interrupts.SIGNALS:
        real_signal(sig, mine)
    sys.unraisablehook = my_hook
    sent = []

    def signal_then_send(sig, handler):
        previous = real_signal(sig, handler)
        if handler is mine and not sent:          # the first handler just given back
            sent.append(sig)
            os.kill(os.getpid(), signal.SIGTERM)
        return previous

    try:
        with interrupts.handling("stopping"):
            if interrupted:
                with pytest.raises(KeyboardInterrupt):
                    os.kill(os.getpid(), signal.SIGINT)
                    import time
                    time.sleep(1)
            monkeypatch.setattr(signal, "signal", signal_then_send)
        monkeypatch.undo()
        assert sent
        assert [signal.getsignal(sig) for sig in interrupts.SIGNALS] == [mine, mine]
        assert sys.unraisablehook is my_hook
        assert not interrupts.requested()
    finally:
        monkeypatch.undo()
        for sig, handler in before.items():
            real_signal(sig, handler)
        sys.unraisablehook = hook
