"""The synthetic example model drives all three resqpy multiprocessing wrappers (real resqpy, no mocks)."""

import inspect
from pathlib import Path

import pytest
import yaml

import resqpy.fault as rqf
import resqpy.model as rq
import resqpy.multi_processing as rqmp

from resqmp.example import write_example


def load_batch(batch_path):
    """Read a batch file: (wrapper function, task names, kwargs list with paths resolved)."""
    batch_path = Path(batch_path)
    doc = yaml.safe_load(batch_path.read_text())
    wrapper = getattr(rqmp, doc["wrapper"] + "_wrapper")
    accepted = set(inspect.signature(wrapper).parameters)
    names, kwargs_list = [], []
    for task in doc["tasks"]:
        kwargs = {**doc["defaults"], **task}
        names.append(kwargs["name"])
        for key, value in kwargs.items():
            if key.endswith("_epc"):
                assert not Path(value).is_absolute(), "batch paths should be relative"
                kwargs[key] = str(batch_path.parent / value)
        # "name" labels the task; only find-faces takes it as an argument
        kwargs_list.append({k: v for k, v in kwargs.items() if k in accepted})
    return wrapper, names, kwargs_list


def run_batch(batch_path, tmp_path, out_name):
    wrapper, names, kwargs_list = load_batch(batch_path)
    recombined = tmp_path / out_name
    success = rqmp.function_multiprocessing(wrapper, kwargs_list, str(recombined), cluster=None, tmp_dir_path=tmp_path)
    assert success == [True] * len(names)
    return rq.Model(str(recombined), quiet=True)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example(tmp_path_factory.mktemp("example"))


def test_write_example_files(example):
    folder = example["epc"].parent
    assert example["epc"] == folder / "model.epc"
    assert (folder / "model.h5").is_file()
    assert len(example["surface_uuids"]) == 4
    assert len(example["trajectory_uuids"]) == 3
    assert len(example["property_uuids"]) == 2

    model = rq.Model(str(example["epc"]), quiet=True)
    assert len(model.parts(obj_type="LocalDepth3dCrs")) == 1
    assert model.uuid(obj_type="IjkGridRepresentation") is not None
    assert str(model.uuid(obj_type="IjkGridRepresentation")) == example["grid_uuid"]
    for title in ("DX", "DY", "DZ"):
        assert model.uuid(obj_type="ContinuousProperty", title=title, related_uuid=example["grid_uuid"])
    titles = [model.title(uuid=u) for u in example["surface_uuids"]]
    assert titles == ["fault 1", "fault 2", "fault 3", "fault 4"]

    docs = {key: yaml.safe_load(example[key].read_text()) for key in ("batch", "batch_mesh", "batch_wells")}
    for key, doc in docs.items():
        assert example[key].read_text().startswith("#")
        assert doc["defaults"]["grid_epc"] == "model.epc"
        assert doc["defaults"]["grid_uuid"] == example["grid_uuid"]
    assert docs["batch"]["wrapper"] == "find_faces_to_represent_surface_regular"
    assert [t["surface_uuid"] for t in docs["batch"]["tasks"]] == example["surface_uuids"]
    assert [t["name"] for t in docs["batch"]["tasks"]] == titles
    assert docs["batch_mesh"]["wrapper"] == "mesh_from_regular_grid_column_property"
    assert [t["prop_uuids"] for t in docs["batch_mesh"]["tasks"]] == [[u] for u in example["property_uuids"]]
    assert docs["batch_wells"]["wrapper"] == "blocked_well_from_trajectory"
    assert docs["batch_wells"]["defaults"]["trajectory_epc"] == "model.epc"
    assert [t["trajectory_uuids"] for t in docs["batch_wells"]["tasks"]] == [[u] for u in example["trajectory_uuids"]]


def test_find_faces_batch(example, tmp_path):
    model = run_batch(example["batch"], tmp_path, "faces.epc")
    gcs_uuids = model.uuids(obj_type="GridConnectionSetRepresentation")
    assert len(gcs_uuids) == len(example["surface_uuids"])
    counts = [rqf.GridConnectionSet(model, uuid=u).count for u in gcs_uuids]
    assert min(counts) > 0
    assert len(set(counts)) == len(counts), counts


def test_mesh_batch(example, tmp_path):
    model = run_batch(example["batch_mesh"], tmp_path, "meshes.epc")
    assert len(model.parts(obj_type="Grid2dRepresentation")) == len(example["property_uuids"])


def test_wells_batch(example, tmp_path):
    model = run_batch(example["batch_wells"], tmp_path, "wells.epc")
    assert len(model.parts(obj_type="BlockedWellboreRepresentation")) == len(example["trajectory_uuids"])


def test_outside_surface_raises(tmp_path):
    example = write_example(tmp_path / "ex", surfaces=1, wells=1, mesh_properties=1, outside_surface=True)
    assert len(example["surface_uuids"]) == 2
    wrapper, names, kwargs_list = load_batch(example["batch"])
    assert names == ["fault 1", "outside"]
    inside, outside = kwargs_list
    assert wrapper(index=0, parent_tmp_dir=str(tmp_path / "mp"), **inside)[1] is True
    with pytest.raises(Exception):
        wrapper(index=1, parent_tmp_dir=str(tmp_path / "mp"), **outside)
