"""Batch parsing, wrapper resolution, path resolution and input checks."""
from __future__ import annotations

import json

import pytest
import yaml

from resqmp import batch
from resqmp.errors import BatchError


def edit(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


def test_relative_paths_resolve_against_the_batch_folder(work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # not the batch folder
    b = batch.load(work / "batch.yaml")
    assert b.wrapper == "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper"
    assert all(t["grid_epc"] == str(work / "model.epc") for t in b.tasks)
    assert all(t["surface_epc"] == str(work / "model.epc") for t in b.tasks)
    assert b.names == ["fault 1", "fault 2", "fault 3", "fault 4"]
    assert b.input_paths() == [str(work / "model.epc")]


def test_task_values_override_defaults_and_json_batches_work(work, example):
    data = yaml.safe_load((work / "batch.yaml").read_text())
    data["tasks"][1]["n_threads"] = 2
    (work / "batch.json").write_text(json.dumps(data))
    b = batch.load(work / "batch.json")
    assert b.tasks[0]["n_threads"] == 1 and b.tasks[1]["n_threads"] == 2


@pytest.mark.parametrize("name", ["find_faces_to_represent_surface_regular",
                                  "find_faces_to_represent_surface_regular_wrapper",
                                  "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper"])
def test_wrapper_names(name):
    ref, fn = batch.resolve_wrapper(name)
    assert fn.__name__ == "find_faces_to_represent_surface_regular_wrapper"
    assert batch.import_reference(ref) is fn


def test_name_is_a_label_only_for_wrappers_without_a_name_argument(example):
    mesh = batch.load(example["batch_mesh"])
    assert all("name" not in t for t in mesh.tasks) and all(mesh.names)
    faces = batch.load(example["batch"])
    assert all("name" in t for t in faces.tasks)


def test_digest_changes_with_the_work(work):
    a = batch.load(work / "batch.yaml").digest
    edit(work / "batch.yaml", lambda d: d["tasks"].pop())
    assert batch.load(work / "batch.yaml").digest != a


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(wrapper="find_faces_nowhere"), "not a resqpy wrapper (expected one of: blocked_well_from_trajectory"),
    (lambda d: d.update(wrapper="no_such_pkg.mod:fn"), "cannot import module 'no_such_pkg.mod'"),
    (lambda d: d.update(wrapper="json:no_such_fn"), "module 'json' has no function 'no_such_fn'"),
    (lambda d: d.pop("wrapper"), "missing key 'wrapper'"),
    (lambda d: d.update(tasks=[]), "tasks: expected a non-empty list"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (lambda d: d["defaults"].update(grid_epc="missing.epc"), "grid_epc"),
    (lambda d: d["tasks"][0].update(surface_uuid="00000000-0000-0000-0000-000000000000"),
     "surface_uuid 00000000-0000-0000-0000-000000000000 is not a part of"),
    (lambda d: d["tasks"][0].update(surface_uuid="fault-one"), "'fault-one': not a uuid"),
    (lambda d: d["tasks"][0].update(surfce_uuid="x"), "unexpected keyword argument 'surfce_uuid'"),
    (lambda d: d["defaults"].pop("grid_uuid"), "missing a required argument: 'grid_uuid'"),
    (lambda d: d["tasks"][0].update(index=3), "'index' is supplied by resqmp"),
])
def test_bad_batches_give_one_clear_line(work, change, message):
    path = edit(work / "batch.yaml", change)
    with pytest.raises(BatchError) as info:
        batch.load(path, allowed_wrappers=("no_such_pkg.mod:fn", "json:*"))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_missing_epc_message_names_the_file(work):
    path = edit(work / "batch.yaml", lambda d: d["defaults"].update(grid_epc="missing.epc"))
    with pytest.raises(BatchError, match=r"tasks\[0\] \(fault 1\): grid_epc .*missing.epc: file not found"):
        batch.load(path)


def test_syntax_error_and_missing_file(work):
    (work / "broken.yaml").write_text("wrapper: x\ntasks: [ {a: 1}\n")
    with pytest.raises(BatchError, match=r"broken.yaml: line \d+ column \d+: YAML syntax error"):
        batch.load(work / "broken.yaml")
    with pytest.raises(BatchError, match="nothere.yaml: not found"):
        batch.load(work / "nothere.yaml")
