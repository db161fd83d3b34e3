"""A batch file is data: only resqpy's wrappers (and resqmp.wrappers) run unless the profile
(tasks.allowed_wrappers) or the command line (--allow-wrapper) allows more, and nothing a batch
names is imported before that check (issue 9)."""
from __future__ import annotations


import pytest
import yaml

from conftest import run_resqmp
from resqmp import batch as batch_mod
from resqmp.errors import BatchError, ExitCode
from resqmp.tasks import run_task
from test_bad_inputs import assert_one_line_error


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def launch(work, batch, *extra, env=None):
    """`resqmp launch --profile local` without the test suite's own allowance of its wrappers."""
    return run_resqmp("launch", "--profile", "local", "--workers", "1", "--batch", batch,
                      "--output", work / "out.epc", *extra, env=env, allow_test_wrappers=False)


@pytest.fixture
def modules(tmp_path):
    """Importable modules (tmp_path on PYTHONPATH): one with a side effect at import, one that
    imports a function from elsewhere next to one it defines."""
    folder = tmp_path / "mods"
    folder.mkdir()
    marker = tmp_path / "imported.marker"
    (folder / "sideeffect.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                          "def run(index, parent_tmp_dir):\n    return index, True, None, []\n")
    (folder / "sitewrappers.py").write_text("from logging import basicConfig  # noqa: F401\n"
                                            "def run(index, parent_tmp_dir, name=None):\n"
                                            "    return index, True, None, []\n")
    return {"PYTHONPATH": str(folder)}, marker


def test_a_wrapper_module_is_not_imported_before_it_is_allowed(work):
    """`this` prints the Zen of Python when imported."""
    proc = launch(work, write(work / "b.yaml", {"wrapper": "this:x", "tasks": [{}]}))
    line = assert_one_line_error(proc, ExitCode.BATCH, "b.yaml", "wrapper 'this:x' is not allowed",
                                 "--allow-wrapper this:x", "tasks.allowed_wrappers")
    assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr, line
    assert not (work / "out.epc").exists()


def test_a_refused_module_with_an_import_side_effect_leaves_no_trace(work, modules):
    env, marker = modules
    proc = launch(work, write(work / "b.yaml", {"wrapper": "sideeffect:run", "tasks": [{}]}), env=env)
    assert_one_line_error(proc, ExitCode.BATCH, "wrapper 'sideeffect:run' is not allowed")
    assert not marker.exists()


def test_logging_basicConfig_cannot_truncate_a_file(work, tmp_path):
    victim = tmp_path / "precious.log"
    victim.write_text("a day of work\n")
    batch = write(work / "b.yaml", {"wrapper": "logging:basicConfig",
                                    "defaults": {"filename": str(victim), "filemode": "w"}, "tasks": [{}]})
    proc = launch(work, batch)
    assert victim.read_text() == "a day of work\n"
    assert_one_line_error(proc, ExitCode.BATCH, "wrapper 'logging:basicConfig' is not allowed")


@pytest.mark.parametrize("wrapper, fragment", [
    ("builtins:dict", "wrapper 'builtins:dict' is not allowed"),
    (":", "wrapper ':': expected a resqpy wrapper name"),
    ("os:path.join", "wrapper 'os:path.join': expected"),        # no attribute walks
    ("resqmp.wrappers:os.system", "expected"),
    ("resqpy.olio.uuid:new_uuid", "wrapper 'resqpy.olio.uuid:new_uuid' is not allowed"),  # resqpy, not a wrapper
])
def test_bad_or_unallowed_references_exit_5_with_one_line(work, wrapper, fragment):
    proc = launch(work, write(work / "b.yaml", {"wrapper": wrapper, "tasks": [{}]}))
    assert_one_line_error(proc, ExitCode.BATCH, fragment)


def test_an_allowed_class_is_still_not_a_wrapper(work):
    proc = launch(work, write(work / "b.yaml", {"wrapper": "builtins:dict", "tasks": [{}]}),
                  "--allow-wrapper", "builtins:dict")
    assert_one_line_error(proc, ExitCode.BATCH, "wrapper 'builtins:dict': not a Python function")


def test_allowed_on_the_command_line_or_in_the_profile(work, tmp_path):
    batch = write(work / "b.yaml", {"wrapper": "wrappers_for_tests:sleepy_wrapper",
                                    "defaults": {"seconds": 0}, "tasks": [{}, {}]})
    assert_one_line_error(launch(work, batch), ExitCode.BATCH, "--allow-wrapper wrappers_for_tests:sleepy_wrapper")
    run_resqmp("launch", "--profile", "local", "--workers", "1", "--batch", batch, "--output", tmp_path / "a.epc",
               "--allow-wrapper", "wrappers_for_tests:sleepy_wrapper", allow_test_wrappers=False, check=0)
    profile = tmp_path / "site.yaml"
    profile.write_text("extends: local\ntasks:\n  allowed_wrappers: ['wrappers_for_tests:*']\n")
    run_resqmp("launch", "--profile", profile, "--workers", "1", "--batch", batch, "--output", tmp_path / "b.epc",
               allow_test_wrappers=False, check=0)


def test_module_star_allows_what_the_module_defines_not_what_it_imports(work, modules, tmp_path):
    env, _ = modules
    victim = tmp_path / "precious.log"
    victim.write_text("keep me\n")
    proc = launch(work, write(work / "b.yaml", {"wrapper": "sitewrappers:basicConfig",
                                                "defaults": {"filename": str(victim), "filemode": "w"},
                                                "tasks": [{}]}),
                  "--allow-wrapper", "sitewrappers:*", env=env)
    assert_one_line_error(proc, ExitCode.BATCH, "basicConfig is imported into sitewrappers",
                          "--allow-wrapper sitewrappers:basicConfig")
    assert victim.read_text() == "keep me\n"
    proc = launch(work, write(work / "b.yaml", {"wrapper": "sitewrappers:run", "tasks": [{}]}),
                  "--allow-wrapper", "sitewrappers:*", env=env)
    assert proc.returncode == 0, proc.stderr


def test_resqpy_wrappers_run_by_default_wherever_they_live(work):
    """A name, its _wrapper form, resqpy.multi_processing:… and the submodule that defines it:
    all allowed, and workers import the one checked reference."""
    import resqpy.multi_processing as m
    home = m.find_faces_to_represent_surface_regular_wrapper.__code__.co_filename
    submodule = "resqpy." + home.split("/resqpy/", 1)[1].removesuffix(".py").replace("/", ".")
    assert submodule != "resqpy.multi_processing"
    data = yaml.safe_load((work / "batch.yaml").read_text())
    for wrapper in ("find_faces_to_represent_surface_regular", "find_faces_to_represent_surface_regular_wrapper",
                    f"{submodule}:find_faces_to_represent_surface_regular_wrapper"):
        data["wrapper"] = wrapper
        b = batch_mod.load(write(work / "b.yaml", data))
        assert b.wrapper == "resqpy.multi_processing:find_faces_to_represent_surface_regular_wrapper"


def test_profile_allow_list_is_validated(work, tmp_path):
    profile = tmp_path / "site.yaml"
    profile.write_text("extends: local\ntasks:\n  allowed_wrappers: ['os.system']\n")
    proc = run_resqmp("launch", "--profile", profile, "--batch", work / "batch.yaml", "--output", tmp_path / "o.epc",
                      allow_test_wrappers=False)
    assert_one_line_error(proc, ExitCode.PROFILE, "site.yaml", "tasks.allowed_wrappers")


def test_a_malformed_allow_wrapper_is_a_usage_error(work):
    proc = launch(work, str(work / "batch.yaml"), "--allow-wrapper", "os.system")
    assert proc.returncode == ExitCode.USAGE and "--allow-wrapper" in proc.stderr


def test_workers_import_only_a_plain_reference():
    """What a worker is sent is a 'module:function' reference; an attribute path is refused
    there too instead of being walked to whatever it names."""
    record = run_task("resqmp.batch:importlib.import_module", {"name": "this"}, 0, "")
    assert not record["success"] and "expected 'package.module:function'" in record["error"]
    with pytest.raises(BatchError, match="not allowed"):
        batch_mod.resolve_wrapper("importlib:import_module")
