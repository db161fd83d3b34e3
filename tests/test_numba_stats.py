"""resqmp.numba_stats reads numba's own counters of resqpy's compiled functions: a call that numba
compiles is a miss, one it loads from the cache is a hit (each in a fresh interpreter: numba
reads its settings, and resqpy its RESQPY_NUMBA_CACHE, at import)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

CALL = """
import json, sys
from resqmp.numba_stats import resqpy_numba_stats
before = resqpy_numba_stats()
if sys.argv[1] == "call":
    import numpy as np
    import resqpy.olio.vector_utilities as vu
    before = resqpy_numba_stats()
    vu.unit_vector_njit(np.array([3.0, 0.0, 4.0]))      # a small resqpy numba function
print(json.dumps({"before": before, "after": resqpy_numba_stats()}))
"""
FUNCTION = "resqpy.olio.vector_utilities.unit_vector_njit"


def _run(what: str, **env) -> dict:
    proc = subprocess.run([sys.executable, "-c", CALL, what], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(proc.stdout)


def test_a_compile_is_a_miss_and_a_load_from_the_cache_a_hit(tmp_path):
    cache = str(tmp_path / "cache")
    env = {"RESQPY_NUMBA_CACHE": "true", "NUMBA_CACHE_DIR": cache}
    cold = _run("call", **env)
    assert cold["before"]["cache_hits"] == cold["before"]["cache_misses"] == 0
    after = cold["after"]
    assert after["cache_enabled"] is True and after["cache_dir"] == cache
    assert after["cache_misses"] == 1 and after["cache_hits"] == 0
    assert after["compiled"] == [FUNCTION] and after["loaded"] == []

    warm = _run("call", **env)["after"]                     # a new process, the same cache
    assert warm["cache_hits"] == 1 and warm["cache_misses"] == 0
    assert warm["loaded"] == [FUNCTION] and warm["compiled"] == []
    assert warm["pid"] != after["pid"]


def test_without_the_cache_every_call_compiles(tmp_path):
    env = {"RESQPY_NUMBA_CACHE": "false", "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):
        after = _run("call", **env)["after"]
        assert after["cache_enabled"] is False
        assert after["cache_misses"] == 1 and after["cache_hits"] == 0 and after["compiled"] == [FUNCTION]


def test_nothing_counted_before_resqpy_is_imported():
    stats = _run("none")["after"]
    assert stats["cache_hits"] == stats["cache_misses"] == 0 and stats["cache_enabled"] is None
