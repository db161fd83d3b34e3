"""Ctrl-C and SIGTERM for the commands that hold a cluster (`launch`, `profiles check`).

The first signal stops the work where it is (KeyboardInterrupt) and is also recorded. Python
cannot deliver an exception raised while a garbage-collector or weakref callback runs: it prints
"Exception ignored in ..." and goes on as if nothing happened, so a Ctrl-C that landed there was
lost (the run went on to the end). Recorded, it is acted on at the next poll point
(`raise_if_requested`: the launcher's waiting loops, the end of the cluster phase) and never printed.

Later signals (an impatient user, a scheduler repeating its signal) and any signal while a
teardown runs (`shielded`, `Teardown`) are never raised: breaking into the teardown would leave
workers or jobs running, the opposite of what they ask for. The process says once that it is
stopping and ignores signals from then on.
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import ExitStack, contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    requested = False       # a signal arrived (whether or not its KeyboardInterrupt got through)
    told = False            # the "stopping" line was written
    shield = 0              # depth of shielded sections
    message = b""
    previous_hook = None


_state = _State()


def install(stopping_message: str) -> None:
    """Handle SIGINT and SIGTERM in this process (main thread only). `stopping_message` is written
    once when a signal arrives that is not raised (a repeat, or during a teardown)."""
    _state.requested = _state.told = False
    _state.message = (stopping_message.rstrip("\n") + "\n").encode()
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)
    if _state.previous_hook is None:
        _state.previous_hook = sys.unraisablehook
        sys.unraisablehook = _unraisable


def requested() -> bool:
    return _state.requested


def raise_if_requested() -> None:
    """A poll point: raise the KeyboardInterrupt of a signal Python could not deliver where it landed."""
    if _state.requested and not _state.shield:
        raise KeyboardInterrupt


@contextmanager
def shielded(saying: str | None = None):
    """Signals inside are recorded, not raised: what runs here must run to its end. `saying`: the
    line a signal gets here, instead of install()'s."""
    message = _state.message
    if saying:
        _state.message = (saying.rstrip("\n") + "\n").encode()
    _state.shield += 1
    try:
        yield
    finally:
        _state.shield -= 1
        _state.message = message


@contextmanager
def interruptible():
    """Inside a shielded section, the one stretch a signal may cut (e.g. a check's stage, while the
    loop around it and its teardown are shielded). A signal recorded before it is raised here."""
    shield, _state.shield = _state.shield, 0
    try:
        raise_if_requested()
        yield
    finally:
        _state.shield = shield


class Teardown(ExitStack):
    """An ExitStack whose unwinding (closing clients, clusters, jobs) no signal breaks into. When
    the body ended normally but a signal was recorded meanwhile, the unwinding is followed by the
    KeyboardInterrupt the signal asked for."""

    def __exit__(self, *exc_info):
        with shielded():
            suppressed = super().__exit__(*exc_info)
        if exc_info[0] is None or suppressed:
            raise_if_requested()
        return suppressed


def _on_signal(signum, frame) -> None:
    first = not _state.requested
    _state.requested = True
    if first and not _state.shield:
        raise KeyboardInterrupt
    # said once; from now on the process ignores them, also while the interpreter exits (where
    # Python puts the default handlers back, and a late SIGTERM would kill it mid-exit)
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if not _state.told:
        _state.told = True
        # straight to the file descriptor: the handler may run in the middle of a write to sys.stderr
        os.write(2, _state.message)


def _unraisable(args) -> None:
    if _state.requested and args.exc_type is KeyboardInterrupt:
        return        # recorded: the next poll point raises it where it can be handled
    (_state.previous_hook or sys.__unraisablehook__)(args)
