"""A group partial whose manifest cannot be read (cut short on a filesystem that lagged, edited,
or a stray .json beside an EPC the journal names) is not a reason to stop: the launcher merges the
task from its own files, and the model is still resqpy's."""
from __future__ import annotations

import pytest

from resqmp.execute import run_group
from resqmp.premerge import manifest_of
from test_premerge import FIND_FACES, batches, recombined, reference  # noqa: F401 - batches is a fixture
from test_recombine import assert_identical


@pytest.mark.parametrize("manifest", ['{"tasks": {"0": {"uuids": [', '{"tasks": {}}', '[]', '{"tasks": {"0": {}}}'])
def test_an_unreadable_manifest_falls_back_to_the_tasks_own_files(batches, tmp_path, manifest):
    _, tasks = batches["find_faces"]
    run_dir = tmp_path / "tasks"
    run_dir.mkdir()
    records = run_group(FIND_FACES, list(enumerate(tasks[:4])), str(run_dir), premerge=True)
    partial = records[0]["partial"]
    manifest_of(partial).write_text(manifest)
    assert_identical(recombined(records, tmp_path), reference(records, tmp_path))
