"""The drop-in API keeps what went wrong: a raising task is False in the list, its error is logged
on the `resqmp` logger and available to the caller, and require_success=True names the failed
tasks and chains the first one's original exception (issue 9)."""
from __future__ import annotations

import logging

import pytest

import resqmp
from wrappers_for_tests import raising_wrapper


def kinds(*names):
    return [{"kind": k} for k in names]


@pytest.mark.parametrize("on_cluster", [False, True], ids=["in-process", "local-cluster"])
def test_a_raising_task_is_logged_and_its_error_kept(tmp_path, cluster, caplog, on_cluster):
    caplog.set_level(logging.WARNING, logger="resqmp")
    success = resqmp.function_multiprocessing(raising_wrapper, kinds("ok", "value", "ok", "none"),
                                              tmp_path / "o.epc", cluster=cluster if on_cluster else None,
                                              tmp_dir_path=tmp_path)
    assert success == [True, False, True, False] and type(success[1]) is bool
    assert isinstance(success, list)
    assert sorted(success.errors) == [1, 3]
    assert type(success.errors[1]) is ValueError and str(success.errors[1]) == "task 1 has a bad value"
    assert "returned success False" in str(success.errors[3])
    warnings = [r for r in caplog.records if r.name == "resqmp" and r.levelno == logging.WARNING]
    text = "\n".join(r.getMessage() for r in warnings)
    assert "task 1" in text and "ValueError: task 1 has a bad value" in text
    assert "task 3" in text


def test_require_success_names_the_failed_tasks_and_chains_the_first_error(tmp_path, cluster):
    with pytest.raises(Exception, match="one or more multiprocessing instances failed") as info:
        resqmp.function_multiprocessing(raising_wrapper, kinds("ok", "value", "value", "ok"), tmp_path / "o.epc",
                                        cluster=cluster, require_success=True, tmp_dir_path=tmp_path)
    assert "tasks 1, 2" in str(info.value)
    assert type(info.value.__cause__) is ValueError and "task 1" in str(info.value.__cause__)
    assert sorted(info.value.errors) == [1, 2]
    assert not (tmp_path / "o.epc").exists()


def test_errors_that_cannot_travel_back_still_arrive_as_text(tmp_path, cluster):
    """An exception that pickles but cannot be rebuilt, or cannot be pickled at all: the result
    still arrives, with the error as resqmp.TaskError naming the original type."""
    success = resqmp.function_multiprocessing(raising_wrapper, kinds("stubborn", "unpicklable", "ok"),
                                              tmp_path / "o.epc", cluster=cluster, tmp_dir_path=tmp_path)
    assert success == [False, False, True]
    assert isinstance(success.errors[0], resqmp.TaskError)
    assert "StubbornError: 7: cannot be unpickled" in str(success.errors[0])
    assert isinstance(success.errors[1], resqmp.TaskError) and "RuntimeError: holds a lock" in str(success.errors[1])
