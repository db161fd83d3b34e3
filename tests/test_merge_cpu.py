"""The launcher's cheaper merge paths give what the plain paths give.

- task_model.TreeCache: task models loaded with one cache (members every task repeats parsed once,
  their trees shared) are each the Model resqpy's loader builds; a member kept in the cache does
  not hide a damaged copy of it in a later task (other bytes: parsed, and refused, again);
- the Recombiner, which loads every task with its cache, still recombines byte for byte as resqpy
  does, with the cache really used (tests/test_recombine.py compares the same way; here it is also
  checked that the shared trees were reached).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from resqmp.batch import load
from resqmp.task_model import DamagedEPC, TreeCache, load_task_model
from resqmp.tasks import run_task
from test_merge_fast_paths import model_state
from test_recombine import assert_identical, resqmp_recombine, resqpy_recombine

import resqpy.model as rq


@pytest.fixture(scope="module")
def task_epcs(tmp_path_factory, example) -> list[dict]:
    """Four find-faces task outputs of one example model: the same grid, CRS and properties parts."""
    run_dir = tmp_path_factory.mktemp("merge-cpu")
    batch = load(example["batch"])
    tasks = [batch.tasks[i % len(batch.tasks)] for i in range(4)]
    results = [run_task(batch.function, dict(kwargs), i, str(run_dir)) for i, kwargs in enumerate(tasks)]
    assert all(r["success"] for r in results), [r["error"] for r in results]
    return results


def test_models_loaded_with_a_cache_are_resqpys(task_epcs):
    cache = TreeCache()
    models = []
    for _ in range(2):
        for r in task_epcs:
            ours = load_task_model(r["epc_file"], cache=cache)
            theirs = rq.Model(r["epc_file"], quiet=True)
            assert model_state(ours) == model_state(theirs), r["epc_file"]
            models.append(ours)
    assert cache.hits > 0
    # the grid part of two different tasks is one tree: not parsed again
    first, later = models[1], models[-1]     # seen once, then kept at its second load
    grid = first.parts(obj_type="IjkGridRepresentation")[0]
    assert later.parts_forest[grid][2] is first.parts_forest[grid][2]


def test_a_kept_member_does_not_hide_its_damaged_copy(task_epcs, tmp_path):
    """A later task whose grid part is unparseable (its CRC right: damaged before it was zipped)
    is refused as without a cache, though that part's healthy bytes are kept."""
    cache = TreeCache()
    source = Path(task_epcs[0]["epc_file"])
    for _ in range(3):
        load_task_model(str(source), cache=cache, strict=True)
    hits = cache.hits
    assert hits > 0
    damaged = tmp_path / "damaged.epc"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.startswith("obj_IjkGridRepresentation"):
                body = body[:len(body) // 2]        # cut inside an element: not well-formed
            dst.writestr(info, body)
    with pytest.raises(DamagedEPC, match="IjkGridRepresentation"):
        load_task_model(str(damaged), cache=cache, strict=True)
    with pytest.raises(DamagedEPC, match="IjkGridRepresentation"):
        load_task_model(str(damaged), strict=True)
    # and the healthy file still loads from the cache as resqpy loads it
    assert model_state(load_task_model(str(source), cache=cache, strict=True)) == \
        model_state(rq.Model(str(source), quiet=True))
    assert cache.hits > hits


def test_recombiner_with_shared_trees_is_identical_to_resqpy(task_epcs, tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ours").mkdir()
    resqpy_recombine(task_epcs, tmp_path / "ref" / "out.epc")
    recombiner = resqmp_recombine(task_epcs, tmp_path / "ours" / "out.epc")
    assert recombiner.trees.hits > 0
    assert_identical(tmp_path / "ours" / "out.epc", tmp_path / "ref" / "out.epc")
