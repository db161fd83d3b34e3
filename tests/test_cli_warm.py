"""`resqmp warm` fills the numba cache named by a profile's worker environment."""
from __future__ import annotations

import json

from conftest import run_resqmp


def test_warm_fills_the_profile_cache_dir(tmp_path):
    cache = tmp_path / "numba-cache"
    profile = tmp_path / "p.yaml"
    profile.write_text(f"extends: local\nenvironment: {{NUMBA_CACHE_DIR: {cache}}}\n")
    # the caller's own settings must not win over the profile's
    proc = run_resqmp("warm", "--profile", profile, env={"NUMBA_CACHE_DIR": str(tmp_path / "elsewhere"),
                                                         "RESQPY_NUMBA_CACHE": "false"}, check=0)
    result = json.loads(proc.stdout)
    assert result["cache_enabled"] is True and result["cache_dir"] == str(cache)
    assert result["errors"] == {}
    assert result["cache_files_after"] > result["cache_files_before"] == 0
    assert any(cache.rglob("*.nbi")) and not (tmp_path / "elsewhere").exists()
    again = json.loads(run_resqmp("warm", "--profile", profile, check=0).stdout)
    assert again["cache_files_after"] == result["cache_files_after"]      # nothing recompiled
