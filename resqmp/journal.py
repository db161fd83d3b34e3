"""A journal of completed tasks beside the output, so the same command resumes after a kill.

OUT.journal.jsonl: a header line naming the batch digest, then one JSON line per finished task,
appended and flushed as each result arrives (a line cut by a kill is ignored on reading).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from resqmp.errors import BatchError


def journal_path(output: Path) -> Path:
    return output.with_name(output.stem + ".journal.jsonl")


class Journal:
    def __init__(self, output: Path, digest: str, run_dir: Path, fresh: bool = False):
        self.path = journal_path(output)
        self.digest = digest
        self.done: dict[int, dict] = {}
        if self.path.exists() and not fresh:
            self._read(run_dir)
        else:
            self._start(run_dir)
        self._file = open(self.path, "a")

    def _start(self, run_dir: Path) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"digest": self.digest, "run_dir": str(run_dir)}) + "\n")
        os.replace(tmp, self.path)

    def _read(self, run_dir: Path) -> None:
        lines = self.path.read_text().splitlines()
        try:
            header = json.loads(lines[0])
        except (IndexError, json.JSONDecodeError):
            self._start(run_dir)
            return
        if header.get("digest") != self.digest:
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
            else:
                self.done.pop(record.get("index"), None)

    def record(self, result: dict) -> None:
        keep = {k: v for k, v in result.items() if k != "traceback"}
        self._file.write(json.dumps(keep) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
