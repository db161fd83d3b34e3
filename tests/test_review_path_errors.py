"""A path the user names that cannot be resolved, a loop of symbolic links or a path longer than
the system takes, is bad input: one line naming it, the documented exit code (6 for OUT, the
performance report and the shared directory, 5 for the batch), nothing written. It used to end as
`internal error: RuntimeError: Symlink loop from ...` (exit 1, "a bug"): pathlib's resolve()
raises RuntimeError on a loop, and a path over PATH_MAX raised OSError out of the preflight."""
from __future__ import annotations

import os

import pytest

from conftest import one_error_line, run_resqmp
from resqmp.errors import ExitCode


def _loop(folder, name):
    """name -> name: a symbolic link that points to itself."""
    os.symlink(name, folder / name)
    return folder / name


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _output_loop(work):
    return ["--output", _loop(work, "out.epc")], ExitCode.OUTPUT, "out.epc"


def _output_too_long(work):
    out = work.joinpath(*["d" * 200] * 25, "out.epc")      # over PATH_MAX (4096)
    return ["--output", out], ExitCode.OUTPUT, "d" * 200


def _batch_loop(work):
    return ["--batch", _loop(work, "loop.yaml")], ExitCode.BATCH, "loop.yaml"


def _performance_report_loop(work):
    return ["--performance-report", _loop(work, "perf.html")], ExitCode.OUTPUT, "perf.html"


def _shared_directory_loop(work):
    return ["--set", f"storage.shared_directory={_loop(work, 'shared')}"], ExitCode.OUTPUT, "shared"


@pytest.mark.parametrize("setup", [_output_loop, _output_too_long, _batch_loop, _performance_report_loop,
                                   _shared_directory_loop], ids=lambda f: f.__name__.strip("_"))
def test_unresolvable_path_is_one_line_and_its_exit_code(work, setup):
    args, code, culprit = setup(work)
    before = _files(work)
    given = dict(zip(args[::2], args[1::2]))
    batch = given.pop("--batch", work / "batch.yaml")
    out = given.pop("--output", work / "faults.epc")
    extra = [str(a) for kv in given.items() for a in kv]
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", batch, "--output", out, *extra)
    line = one_error_line(proc, code)
    assert "internal error" not in line and culprit in line, line
    assert _files(work) == before                 # nothing written, nothing removed


def test_batch_value_that_is_a_link_loop_is_the_task_s_business(work):
    """A `*_file` value is passed to the wrapper as written (resolved); a loop there is not an
    input resqmp can compare with OUT's files, and no reason for an internal error: the task
    that cannot open it fails (exit 3), the others are unaffected."""
    _loop(work, "marker")
    batch = work / "loop-value.yaml"
    batch.write_text("wrapper: wrappers_for_tests:flaky_wrapper\n"
                     "tasks:\n  - {marker_file: marker, name: relative}\n"
                     f"  - {{marker_file: '{work / 'marker'}', name: absolute}}\n")
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", batch, "--output", work / "o.epc")
    assert proc.returncode == ExitCode.TASKS_FAILED and "internal error" not in proc.stderr, proc.stderr
