"""Errors that end a run with one clear line and a documented exit code."""


class ExitCode:
    """Exit codes of `resqmp` (documented in the README)."""
    OK = 0
    INTERNAL = 1          # a bug: unexpected exception (traceback with --debug)
    USAGE = 2             # bad command line (click's own code for usage errors)
    TASKS_FAILED = 3      # the run finished but some tasks failed; OUT holds the successful ones
    PROFILE = 4           # profile not found, invalid, or a bad --set
    BATCH = 5             # batch file or its inputs invalid (wrapper, EPC, uuid)
    OUTPUT = 6            # output path not writable, disk full while writing
    CLUSTER = 7           # cluster could not start, no worker arrived, shared dir not visible
    INTERRUPTED = 130     # Ctrl-C / SIGTERM: cluster torn down, journal kept for resume


class ResqmpError(Exception):
    """Base class: carries the exit code; str() is the single line shown to the user."""
    exit_code = ExitCode.INTERNAL


class ProfileError(ResqmpError):
    exit_code = ExitCode.PROFILE


class BatchError(ResqmpError):
    exit_code = ExitCode.BATCH


class OutputError(ResqmpError):
    exit_code = ExitCode.OUTPUT


class ClusterError(ResqmpError):
    exit_code = ExitCode.CLUSTER


class Interrupted(ResqmpError):
    exit_code = ExitCode.INTERRUPTED
