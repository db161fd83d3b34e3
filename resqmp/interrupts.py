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
    previous_hook = sys.__unraisablehook__     # what _unraisable passes everything else on to
    process_ends = False    # the `resqmp` console script: the process ends with the command
    restoring = False       # handling() is giving the caller its handlers back: signals wait for those


_state = _State()


def process_ends_with_the_command() -> None:
    """For the console script: once a signal stopped the command, the process is ending, and a
    repeat must not kill it while it exits (distributed's exit hooks still close what is left).
    Without this (CliRunner, a notebook calling resqmp.cli.main), handling() always gives the
    caller its own handlers back."""
    _state.process_ends = True


@contextmanager
def handling(stopping_message: str):
    """Handle SIGINT and SIGTERM in this process (main thread only) while the command runs.
    `stopping_message` is written once when a signal arrives that is not raised (a repeat, or
    during a teardown). Afterwards the handlers and sys.unraisablehook are what they were, except
    in a process that ends with the command and was signalled: there signals stay ignored."""
    _state.requested = _state.told = False
    _state.shield = 0
    _state.message = (stopping_message.rstrip("\n") + "\n").encode()
    _state.restoring = False
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    outer_hook, previous_hook = _state.previous_hook, sys.unraisablehook
    if previous_hook is _unraisable:          # never pass unraisables on to ourselves
        previous_hook = outer_hook
    _state.previous_hook = previous_hook
    try:
        for sig in SIGNALS:
            signal.signal(sig, _on_signal)
        sys.unraisablehook = _unraisable
        yield
    finally:
        # first, before any call: a signal from here on neither raises out of this finally nor
        # changes a handler half-way (resqmp's handler lets it pass: the command is over)
        _state.restoring = True
        if _state.requested and _state.process_ends:
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            sys.unraisablehook = previous_hook
            _state.previous_hook = outer_hook
            # this command's signal is handled: the caller's next work (an API call's poll points)
            # must not raise it again
            _state.requested = _state.told = False
        _state.restoring = False


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
    _state.shield += 1       # first: a signal from here on is recorded, never raised
    try:
        if saying:
            _state.message = (saying.rstrip("\n") + "\n").encode()
        yield
    finally:
        _state.shield -= 1
        _state.message = message


@contextmanager
def interruptible():
    """Inside a shielded section, the one stretch a signal may cut (e.g. a check's stage, while the
    loop around it and its teardown are shielded). A signal recorded before it is raised here."""
    shield = _state.shield
    try:
        _state.shield = 0        # inside the try: a signal landing right here cannot skip the restore
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
    if _state.restoring:
        return          # the command is over; see handling()
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
    _state.previous_hook(args)
