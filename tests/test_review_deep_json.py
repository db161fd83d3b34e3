"""The JSON files resqmp reads back beside OUT (its journal, its report) are checked before any
work: a line nested deeper than Python's JSON reader can follow is a journal that cannot be
resumed from (exit 6 naming the line) or a report that is not resqmp's (exit 6), never
`internal error: RecursionError: maximum recursion depth exceeded while decoding a JSON array`
(exit 1): json.loads raises RecursionError, which is not the ValueError the readers caught."""
from __future__ import annotations

import hashlib

from conftest import one_error_line, run_resqmp
from resqmp import batch as batch_mod
from resqmp.errors import ExitCode

DEEP = "[" * 100_000 + "]" * 100_000


def _launch(work):
    return run_resqmp("launch", "--profile", "local", "--workers", "2", "--batch", work / "batch.yaml",
                      "--output", work / "faults.epc")


def _header(work) -> str:
    digest = batch_mod.load(work / "batch.yaml").digest
    return f'{{"digest": "{digest}", "run_dir": "x"}}\n'


def test_journal_record_nested_too_deep(work):
    journal = work / "faults.journal.jsonl"
    journal.write_text(_header(work) + DEEP + "\n")
    before = journal.read_bytes()
    line = one_error_line(_launch(work), ExitCode.OUTPUT)
    assert f"journal {journal}: line 2" in line and "--fresh" in line, line
    assert journal.read_bytes() == before
    assert not (work / "faults.epc").exists()


def test_journal_header_nested_too_deep(work):
    journal = work / "faults.journal.jsonl"
    journal.write_text(DEEP + "\n")
    before = hashlib.sha256(journal.read_bytes()).hexdigest()
    line = one_error_line(_launch(work), ExitCode.OUTPUT)
    assert f"journal {journal}: line 1: not a resqmp journal header" in line, line
    assert hashlib.sha256(journal.read_bytes()).hexdigest() == before      # not resqmp's: never replaced


def test_report_nested_too_deep(work):
    (work / "faults.epc").write_bytes(b"a model resqmp did not write")
    report = work / "faults.report.json"
    report.write_text(DEEP)
    line = one_error_line(_launch(work), ExitCode.OUTPUT)
    assert str(report) in line and "not resqmp's report" in line, line
    assert (work / "faults.epc").read_bytes() == b"a model resqmp did not write"
