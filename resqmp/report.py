"""The JSON run report written beside the output: OUT.report.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

from resqmp.errors import OutputError
from resqmp.outputs import create_new, report_path, report_temp

__all__ = ["report_path", "write_report"]


#: what the report says of each task (and all the launcher keeps of a task once it is merged)
TASK_FIELDS = ("index", "name", "success", "seconds", "worker", "error", "attempts", "lost_workers", "resumed")


def task_row(record: dict) -> dict:
    """A task's record as the report gives it."""
    return {k: record.get(k) for k in TASK_FIELDS}


def write_report(output: Path, summary: dict, tasks: list[dict]) -> Path:
    rows = [task_row(t) for t in sorted(tasks, key=lambda t: t["index"])]
    totals = {
        "tasks": len(rows),
        "succeeded": sum(1 for r in rows if r["success"]),
        "failed": sum(1 for r in rows if not r["success"]),
        "resumed": sum(1 for r in rows if r["resumed"]),
        "task_seconds": round(sum(r["seconds"] or 0.0 for r in rows), 3),
    }
    path = report_path(output)
    # a temporary name of its own, created exclusively (never an existing file), renamed over the report
    tmp = report_temp(output)
    try:
        fd = create_new(tmp)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({**summary, "totals": totals, "tasks": rows}, indent=2) + "\n")
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise OutputError(f"output {output}: cannot write its report {path} ({e.strerror})") from None
    return path
