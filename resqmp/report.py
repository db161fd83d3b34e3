"""The JSON run report written beside the output: OUT.report.json."""
from __future__ import annotations

import json
import os
from pathlib import Path


def report_path(output: Path) -> Path:
    return output.with_name(output.stem + ".report.json")


def write_report(output: Path, summary: dict, tasks: list[dict]) -> Path:
    rows = []
    for t in sorted(tasks, key=lambda t: t["index"]):
        rows.append({k: t.get(k) for k in ("index", "name", "success", "seconds", "worker", "error",
                                           "attempts", "resumed")})
    totals = {
        "tasks": len(rows),
        "succeeded": sum(1 for r in rows if r["success"]),
        "failed": sum(1 for r in rows if not r["success"]),
        "resumed": sum(1 for r in rows if r["resumed"]),
        "task_seconds": round(sum(r["seconds"] or 0.0 for r in rows), 3),
    }
    path = report_path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**summary, "totals": totals, "tasks": rows}, indent=2) + "\n")
    os.replace(tmp, path)
    return path
