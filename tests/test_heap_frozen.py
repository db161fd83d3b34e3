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
        # made in the tasks phase: seen by the collector until a full collection finds it alive
        later = seen["later"] = object.__new__(type("TasksPhaseObject", (), {}))
        seen["later_visible"] = any(o is later for o in gc.get_objects())
        gc.collect()
        seen["later_visible_after_full_collection"] = any(o is later for o in gc.get_objects())
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
    assert seen["later_visible"] and not seen["later_visible_after_full_collection"]
    assert gc.get_freeze_count() == 0                                  # ...and back in it after
    assert any(o is seen["marker"] for o in gc.get_objects()) and any(o is seen["later"] for o in gc.get_objects())
    assert not [cb for cb in gc.callbacks if getattr(cb, "__qualname__", "").startswith("_startup_heap_frozen")]


def test_cyclic_garbage_of_the_tasks_phase_is_still_collected(tmp_path, monkeypatch):
    """What becomes cyclic garbage while the tasks run is collected then, not held to the end."""
    import weakref
    real = run_mod.run_on_client
    seen = {}

    class Node:
        pass

    def watched(*a, **k):
        a_, b_ = Node(), Node()
        a_.other, b_.other = b_, a_              # a cycle, garbage once the names go
        seen["ref"] = weakref.ref(a_)
        del a_, b_
        gc.collect()
        seen["collected"] = seen["ref"]() is None
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "run_on_client", watched)
    result = run_mod.launch("local", str(_batch(tmp_path)), str(tmp_path / "o.epc"),
                            allowed_wrappers=("wrappers_for_tests:*",))
    assert result.exit_code == 0 and seen["collected"]


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


def test_garbage_kept_frozen_by_the_tasks_phase_stays_bounded():
    """Objects alive at one full collection of the tasks phase and garbage (cyclic) after it are
    kept from the collector with what it froze: in a long run (futures, task states, exceptions
    with tracebacks, each alive at some full collection) that must not grow with every task.
    Here each round's cycle holds as many objects as the startup heap: the collector must look
    at what it froze again, and collect them, before they pile up."""
    import weakref

    class Round:
        pass

    with run_mod._startup_heap_frozen():
        heap = gc.get_freeze_count()
        refs = []
        for _ in range(12):
            r = Round()
            r.me, r.payload = r, [[] for _ in range(heap)]       # a cycle and a heap's worth of objects
            refs.append(weakref.ref(r))
            gc.collect()                # a full collection while it is alive
            del r                       # garbage from now on
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
    assert alive <= 4, f"{alive} of 12 rounds' garbage still held by the tasks phase"
    assert gc.get_freeze_count() == 0
