"""A journal of completed tasks beside the output, so the same command resumes after a kill.

OUT.journal.jsonl: a header line naming the batch digest, then one JSON line per finished task,
appended and fsynced as each result arrives (a line cut by a kill is ignored on reading).
The open journal holds an exclusive lock: a second launch writing the same OUT is refused.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from resqmp.errors import BatchError, OutputError


def journal_path(output: Path) -> Path:
    return output.with_name(output.stem + ".journal.jsonl")


class Journal:
    def __init__(self, output: Path, digest: str, run_dir: Path, fresh: bool = False):
        self.path = journal_path(output)
        self.digest = digest
        self.done: dict[int, dict] = {}
        try:
            self._file = open(self.path, "a+")
        except OSError as e:
            raise OutputError(f"output {output}: cannot write its journal {self.path} ({e.strerror})") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise OutputError(f"output {output}: another resqmp launch is writing it "
                              f"(its journal {self.path} is locked)") from None
        self._file.seek(0)
        lines = self._file.read().splitlines()
        if fresh or not lines or not self._read(lines):
            self._start(run_dir)

    def _start(self, run_dir: Path) -> None:
        self._file.truncate(0)
        self._file.write(json.dumps({"digest": self.digest, "run_dir": str(run_dir)}) + "\n")
        self._sync()

    def _read(self, lines: list[str]) -> bool:
        """Load completed results; False when the header is unreadable (start afresh)."""
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            return False
        if header.get("digest") != self.digest:
            self._file.close()
            raise BatchError(f"journal {self.path}: the batch changed since this output was started; "
                             f"rerun with --fresh to start over (or restore the batch)")
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue          # the last line of a killed run may be cut short
            # a result counts only while its task files still exist
            if record.get("success") and record.get("epc_file") and os.path.exists(record["epc_file"]):
                self.done[record["index"]] = record
            elif record.get("success") and record.get("epc_file") is None:
                self.done[record["index"]] = record       # nothing to merge, nothing to lose
            else:
                self.done.pop(record.get("index"), None)
        return True

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def record(self, result: dict) -> None:
        keep = {k: v for k, v in result.items() if k != "traceback"}
        self._file.write(json.dumps(keep) + "\n")
        self._sync()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)    # while still locked: no other launch can slip in
        self.close()
