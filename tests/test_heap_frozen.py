"""The launcher's startup heap (imports, cluster, client: about a million objects) is frozen out of
the cyclic garbage collector's sight during the tasks phase, where each full collection rescanned
it all (bench/RESULTS.md wave 11), and given back after: a library caller's process is left with
the collector as it found it, and a caller that froze its own heap keeps it frozen."""
from __future__ import annotations

import gc

import pytest

import resqmp.run as run_mod


def _batch(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("wrapper: wrappers_for_tests:numba_threads_wrapper\n"
                     "tasks:\n  - {record_file: rec0.json}\n  - {record_file: rec1.json}\n")
    return batch


def _watch_tasks_phase(monkeypatch) -> dict:
    """What the collector looked like while the tasks ran (observed around the real run_on_client)."""
    seen = {}
    real = run_mod.run_on_client
    marker = object.__new__(type("StartupObject", (), {}))      # tracked, made before the launch

    def watched(*a, **k):
        seen["frozen"] = gc.get_freeze_count()
        seen["marker_visible"] = any(o is marker for o in gc.get_objects())
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "run_on_client", watched)
    seen["marker"] = marker
    return seen


def test_the_tasks_phase_runs_with_the_startup_heap_frozen_and_the_launch_gives_it_back(tmp_path, monkeypatch):
    assert gc.get_freeze_count() == 0
    seen = _watch_tasks_phase(monkeypatch)
    result = run_mod.launch("local", str(_batch(tmp_path)), str(tmp_path / "o.epc"),
                            allowed_wrappers=("wrappers_for_tests:*",))
    assert result.exit_code == 0
    assert seen["frozen"] > 100_000 and not seen["marker_visible"]     # out of the collector's sight
    assert gc.get_freeze_count() == 0                                  # ...and back in it after
    assert any(o is seen["marker"] for o in gc.get_objects())


def test_a_failed_tasks_phase_gives_the_heap_back_too(tmp_path, monkeypatch):
    def failing(*a, **k):
        assert gc.get_freeze_count() > 0
        raise RuntimeError("the tasks phase broke")

    monkeypatch.setattr(run_mod, "run_on_client", failing)
    with pytest.raises(RuntimeError, match="tasks phase broke"):
        run_mod.launch("local", str(_batch(tmp_path)), str(tmp_path / "o.epc"),
                       allowed_wrappers=("wrappers_for_tests:*",))
    assert gc.get_freeze_count() == 0


def test_a_caller_that_froze_its_own_heap_keeps_it_frozen(tmp_path, monkeypatch):
    seen = _watch_tasks_phase(monkeypatch)
    gc.freeze()
    try:
        result = run_mod.launch("local", str(_batch(tmp_path)), str(tmp_path / "o.epc"),
                                allowed_wrappers=("wrappers_for_tests:*",))
        assert result.exit_code == 0
        assert seen["frozen"] > 100_000 and not seen["marker_visible"]
        # what the caller froze is still frozen (the launch did not unfreeze it on its way out)
        assert gc.get_freeze_count() > 100_000 and not any(o is seen["marker"] for o in gc.get_objects())
    finally:
        gc.unfreeze()
