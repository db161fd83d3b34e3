"""`from resqmp import function_multiprocessing`: resqpy's signature and results, on resqmp's engine."""
from __future__ import annotations

import inspect

import pytest
import resqpy.multi_processing as rqmp

import resqmp
from epc_compare import content
from resqmp.batch import load


def kwargs_of(batch_file):
    b = load(batch_file)
    return b.function, [dict(k) for k in b.tasks]


def test_signature_matches_resqpy():
    ours = inspect.signature(resqmp.function_multiprocessing)
    theirs = inspect.signature(rqmp.function_multiprocessing)
    assert list(ours.parameters) == list(theirs.parameters)
    assert [p.default for p in ours.parameters.values()][3:] == [None, True, False, '.', 'dask', True]
    assert [p.default for p in theirs.parameters.values()][4:] == [True, False, '.', 'dask', True]


@pytest.mark.parametrize("on_cluster", [False, True], ids=["in-process", "local-cluster"])
def test_same_content_as_resqpy(example, tmp_path, cluster, on_cluster):
    function, kwargs_list = kwargs_of(example["batch"])
    ours = resqmp.function_multiprocessing(function, kwargs_list, tmp_path / "ours.epc",
                                           cluster=cluster if on_cluster else None, tmp_dir_path=tmp_path)
    assert ours == [True] * len(kwargs_list)
    # like resqpy, the caller's dicts gain index and parent_tmp_dir
    assert [k["index"] for k in kwargs_list] == list(range(len(kwargs_list)))
    function, kwargs_list = kwargs_of(example["batch"])
    theirs = rqmp.function_multiprocessing(function, kwargs_list, str(tmp_path / "theirs.epc"), None,
                                           tmp_dir_path=str(tmp_path))
    assert ours == theirs
    assert content(tmp_path / "ours.epc") == content(tmp_path / "theirs.epc")
    assert not list(tmp_path.glob("tmp_*"))               # clean_up=True removes the task folder


def test_a_raising_task_costs_only_itself(example_with_outside, tmp_path, cluster):
    function, kwargs_list = kwargs_of(example_with_outside["batch"])
    with pytest.raises(AttributeError):                   # resqpy loses every result
        rqmp.function_multiprocessing(function, [dict(k) for k in kwargs_list], str(tmp_path / "r.epc"), None,
                                      tmp_dir_path=str(tmp_path))
    success = resqmp.function_multiprocessing(function, kwargs_list, tmp_path / "o.epc", cluster=cluster,
                                              tmp_dir_path=tmp_path)
    assert success == [True, True, True, False]
    assert sorted(content(tmp_path / "o.epc")["faces"]) == ["fault 1", "fault 2", "fault 3"]


def test_require_success_raises_and_writes_nothing(example_with_outside, tmp_path, cluster):
    function, kwargs_list = kwargs_of(example_with_outside["batch"])
    with pytest.raises(Exception, match="one or more multiprocessing instances failed"):
        resqmp.function_multiprocessing(function, kwargs_list, tmp_path / "o.epc", cluster=cluster,
                                        require_success=True, tmp_dir_path=tmp_path)
    assert not (tmp_path / "o.epc").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_existing_output_is_added_to_like_resqpy(example, tmp_path):
    function, kwargs_list = kwargs_of(example["batch"])
    resqmp.function_multiprocessing(function, kwargs_list[:2], tmp_path / "o.epc", tmp_dir_path=tmp_path)
    resqmp.function_multiprocessing(function, kwargs_of(example["batch"])[1][2:], tmp_path / "o.epc",
                                    tmp_dir_path=tmp_path)
    resqpy_out = tmp_path / "r.epc"
    function, kwargs_list = kwargs_of(example["batch"])
    rqmp.function_multiprocessing(function, kwargs_list[:2], str(resqpy_out), None, tmp_dir_path=str(tmp_path))
    rqmp.function_multiprocessing(function, kwargs_of(example["batch"])[1][2:], str(resqpy_out), None,
                                  tmp_dir_path=str(tmp_path))
    assert content(tmp_path / "o.epc") == content(resqpy_out)
    assert len(content(tmp_path / "o.epc")["faces"]) == 4


def test_keeps_task_files_when_clean_up_is_false(example, tmp_path):
    function, kwargs_list = kwargs_of(example["batch"])
    resqmp.function_multiprocessing(function, kwargs_list[:1], tmp_path / "o.epc", tmp_dir_path=tmp_path,
                                    clean_up=False)
    kept = list(tmp_path.glob("tmp_*/*/wrapper.epc"))
    assert len(kept) == 1
