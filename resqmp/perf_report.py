"""`resqmp launch --performance-report FILE.html`: distributed's performance report (task stream,
worker and scheduler profiles, bandwidth, system) of everything the run sent to its cluster.

The report is published like OUT: written to a hidden file beside FILE, then renamed onto it, so
FILE never names a half-written report. It is written only when the run reaches its end (also
with failed tasks, when it matters most); an interrupted or crashed run leaves FILE as it was.
A FILE that exists and is not a performance report is never replaced.
"""
from __future__ import annotations

import html
import logging
import os
import secrets
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

from resqmp.errors import OutputError
from resqmp.outputs import create_new
from resqmp.paths import named_path

log = logging.getLogger(__name__)

# <title> of the page distributed writes; what marks an existing FILE as an earlier report
TITLE = "<title>Dask Performance Report</title>"


def target(path: str | None, own_files: tuple[Path, ...]) -> Path | None:
    """FILE, checked before anything is provisioned: its folder exists and is writable, and FILE
    is neither one of the run's own files nor something other than an earlier report."""
    if path is None:
        return None
    file = named_path(path, "performance report", OutputError)
    where = f"performance report {file}"
    if not file.parent.is_dir():
        raise OutputError(f"{where}: folder {file.parent} does not exist")
    if not os.access(file.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{where}: folder {file.parent} is not writable")
    if file in own_files:
        raise OutputError(f"{where}: is one of the run's own files (output, .h5, report, journal); "
                          f"expected another name, e.g. {file.with_suffix('').name}.perf.html")
    if file.is_dir():
        raise OutputError(f"{where}: is a directory; expected an .html file path")
    if file.exists() and not file.is_file():
        # never opened to see whether it is an earlier report: a FIFO would block for ever
        raise OutputError(f"{where}: is not a regular file; expected an .html file path")
    if file.exists() and not _is_report(file):
        raise OutputError(f"{where}: exists and is not a Dask performance report; remove it or "
                          f"choose another name (resqmp only replaces its own reports)")
    return file


def _is_report(file: Path) -> bool:
    try:
        with open(file, "rb") as f:
            return TITLE.encode() in f.read(4096)
    except OSError:
        return False


@contextmanager
def recorded(file: Path | None, summary: dict, say):
    """Record everything the default client's cluster runs inside the block; afterwards publish
    the report at FILE and name it in the run report (summary). A report that cannot be written
    is a warning, not a lost run: the model is still published."""
    if file is None:
        yield
        return
    from distributed import get_client, performance_report

    # BokehJS inline (~2 MB): the report opens without network access, as on most HPC clusters
    recorder = performance_report(filename=os.devnull, mode="inline")
    try:
        recorder.__enter__()
    except Exception as e:   # noqa: BLE001 - e.g. a scheduler that refuses run_on_scheduler
        _not_written(file, e, summary, say)
        yield
        return
    yield                    # an exception in the block propagates: nothing is written
    partial = str(file.with_name(f".{file.name}.{secrets.token_hex(4)}.partial"))
    try:
        # created here, exclusively, with the user's umask; distributed then writes into it
        os.close(create_new(partial))
        recorder.filename = partial
        # the Summary's "Calling Code": what was run, not resqmp's own frame
        get_client().sync(recorder.__aexit__, None, None, None, code=html.escape(_what_ran(summary)))
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, file)
    except BaseException as e:
        _remove(partial)
        if not isinstance(e, Exception):
            raise
        _not_written(file, e, summary, say)
        return
    summary["performance_report"] = str(file)
    say(f"performance report {file}")


def _what_ran(summary: dict) -> str:
    command = shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv and sys.argv[0] else ""
    lines = [f"$ {command}", ""] if command else []
    return "\n".join(lines + [f"batch:   {summary.get('batch')} (wrapper {summary.get('wrapper')})",
                               f"profile: {summary.get('profile')} ({summary.get('backend')}, {summary.get('profile_source')})",
                               f"output:  {summary.get('output')}"])


def _not_written(file: Path, error: BaseException, summary: dict, say) -> None:
    log.debug("performance report not written", exc_info=error)
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    summary["performance_report"] = None
    summary["performance_report_error"] = f"{type(error).__name__}: {reason}"
    say(f"warning: performance report {file} not written: {reason}")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
