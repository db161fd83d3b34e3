"""What the launcher keeps of each task until the report: the report's fields, not the record the
worker sent (its uuid list, file paths, timings...: ~2 KB a task, held for the whole run; issue 11
goal 4). The merge reads the full record first; a task found damaged later is journaled failed
from what is kept."""
from __future__ import annotations

import json

from resqmp.report import TASK_FIELDS


def test_a_launch_keeps_each_tasks_report_fields_only(example, tmp_path):
    from resqmp.run import launch
    out = tmp_path / "faults.epc"
    result = launch("local", str(example["batch"]), str(out), workers=2)
    assert result.exit_code == 0 and result.succeeded == len(result.tasks) > 1
    for task in result.tasks:
        assert set(task) == set(TASK_FIELDS), sorted(task)
    report = json.loads(result.report.read_text())
    assert report["tasks"] == result.tasks
    assert all(t["success"] and t["worker"] and t["seconds"] > 0 and t["attempts"] == 1 for t in result.tasks)
