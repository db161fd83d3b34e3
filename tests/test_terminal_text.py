"""Text a batch supplies (task names, wrapper names, paths, a task's error) reaches the user's
terminal: a control character in it (an escape sequence, a carriage return, a line break, a
bidirectional override) must never act there. resqmp shows it escaped, as Python's repr does
(resqmp.text.printable), in every line it prints: progress, warnings, stall reports, the one error
line; the JSON report keeps the exact text. Real launches, a real pseudo-terminal."""
from __future__ import annotations

import json
import os
import pty
import select

import yaml

from conftest import run_resqmp
from resqmp.errors import ExitCode
from test_bad_inputs import assert_one_line_error

#: what a hostile batch puts in its names: a window-title sequence, clear-screen, a carriage return
#: that overwrites the line, a line break that forges a line of resqmp's, a right-to-left override
NAMES = ["\x1b]0;pwned\x07title", "clear\x1b[2Jscreen", "ok\rFAILED", "two\nresqmp: error: forged",
         "\u202egnp.exe"]
RAW = ("\x1b", "\x07", "\r", "\u202e")


def assert_printable(text: str) -> None:
    for raw in RAW:
        assert raw not in text, repr(text)
    assert "resqmp: error: forged" not in text.replace("\\nresqmp: error: forged", ""), text


def named_batch(work, names, **change):
    data = yaml.safe_load((work / "batch.yaml").read_text())
    for task, name in zip(data["tasks"], names):
        task["name"] = name
    for key, value in change.items():
        data["tasks"][int(key[1:])]["surface_uuid"] = value
    path = work / "named.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_task_names_are_shown_escaped_and_kept_exact_in_the_report(work):
    """Progress lines and the failed task's line show each name escaped; the report keeps it."""
    data = yaml.safe_load((work / "batch.yaml").read_text())
    grid = data["defaults"]["grid_uuid"]
    batch = named_batch(work, NAMES, t1=grid)                  # task 1: a grid is not a surface
    out = work / "faults.epc"
    proc = run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert_printable(proc.stderr + proc.stdout)
    for name in NAMES[:4]:
        assert repr(name)[1:-1] in proc.stderr, (name, proc.stderr)
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert [t["name"] for t in report["tasks"]] == NAMES[:4]


def test_a_batch_error_naming_a_task_is_one_escaped_line(work):
    batch = named_batch(work, ["two\nresqmp: error: forged\x1b[2J"], t0="not-a-uuid")
    proc = run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", work / "o.epc")
    line = assert_one_line_error(proc, ExitCode.BATCH, "tasks[0] (two\\nresqmp: error: forged\\x1b[2J)",
                                 "not a uuid")
    assert_printable(line)


def test_stall_lines_show_task_names_escaped(tmp_path):
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    batch = tmp_path / "batch.yaml"
    batch.write_text(yaml.safe_dump({"wrapper": "wrappers_for_tests:logged_wrapper",
                                     "defaults": {"log_dir": str(log_dir), "seconds": 4},
                                     "tasks": [{"name": NAMES[1]}, {"name": NAMES[3]}]}))
    proc = run_resqmp("launch", "--profile", "local", "--workers", "2", "--set", "tasks.stall_after=1",
                      "--batch", batch, "--output", tmp_path / "o.epc")
    assert proc.returncode == ExitCode.OK, proc.stderr
    stalls = [ln for ln in proc.stderr.splitlines() if ln.startswith("resqmp:   task ")]
    assert stalls, proc.stderr
    assert_printable(proc.stderr)
    assert any("clear\\x1b[2Jscreen" in ln for ln in stalls), proc.stderr


def _on_a_terminal(show) -> str:
    """What `show(report)` writes through a ProgressReport on a real pseudo-terminal (its rich bar)."""
    from resqmp.progress import ProgressReport
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", buffering=1)
    try:
        report = ProgressReport(total=2, stream=stream)
        assert report.bar is not None               # a terminal: the rich bar, not plain lines
        show(report)
        report.close()
        stream.flush()
        chunks = []
        while select.select([master], [], [], 0.5)[0]:
            data = os.read(master, 65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        stream.close()
        os.close(master)


def test_on_a_terminal_names_are_escaped_and_never_read_as_markup():
    """rich reads '[...]' in a printed string as markup: a name '[/x]' raised MarkupError (an internal
    error ending the run), '[blink]' restyled the line; an escape sequence went through raw."""
    hostile = "[/x][blink]clear\x1b[2Jscreen"
    said = _on_a_terminal(lambda r: (r.advance({"index": 0, "success": False, "error": "RuntimeError: no"}, hostile),
                                     r.warn(f"task 1 ({hostile}): gone"),
                                     r.stalled(5, [{"index": 1, "worker": "w", "seconds": 5}], 0, 10,
                                               [hostile, hostile])))
    assert "[/x][blink]clear\\x1b[2Jscreen" in said, said
    assert "clear\x1b[2Jscreen" not in said, repr(said)
