"""Profile discovery, layering, extends, --set and validation errors."""
from __future__ import annotations

import textwrap

import pytest

from conftest import run_resqmp
from resqmp import profiles
from resqmp.errors import ExitCode, ProfileError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def layers(tmp_path, monkeypatch):
    """Isolated site/user/env layers (the packaged layer stays)."""
    site, user_cfg, env1, env2 = (tmp_path / n for n in ("site", "cfg", "env1", "env2"))
    monkeypatch.setattr(profiles, "SITE_DIR", site)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user_cfg))
    monkeypatch.setenv("RESQMP_PROFILE_PATH", f"{env1}:{env2}")
    return {"site": site, "user": user_cfg / "resqmp" / "profiles", "env1": env1, "env2": env2}


def test_packaged_local_profile_loads_with_defaults():
    p = profiles.load("local")
    assert p.backend == "local"
    assert p.scaling["workers"] >= 1
    assert p.source.name == "local.yaml"


def test_later_layer_wins_on_same_name(layers):
    write(layers["site"] / "team.yaml", "backend: local\nscaling: {workers: 3}\n")
    assert profiles.load("team").scaling["workers"] == 3
    write(layers["user"] / "team.yaml", "backend: local\nscaling: {workers: 4}\n")
    assert profiles.load("team").scaling["workers"] == 4
    write(layers["env2"] / "team.yaml", "backend: local\nscaling: {workers: 5}\n")
    p = profiles.load("team")
    assert p.scaling["workers"] == 5 and p.source == (layers["env2"] / "team.yaml").resolve()
    found = profiles.available()
    assert found["team"][0] == "RESQMP_PROFILE_PATH" and found["local"][0] == "packaged"


def test_extends_merges_mappings_and_replaces_lists(layers):
    write(layers["site"] / "base.yaml", """\
        backend: local
        cluster: {threads_per_worker: 1, processes: true}
        environment: {A: "1", B: "2"}
        scaling: {workers: 2, worker_timeout: 30}
        """)
    write(layers["user"] / "mine.yaml", """\
        extends: base
        environment: {B: "20", C: "3"}
        scaling: {workers: 6}
        """)
    p = profiles.load("mine")
    assert p.environment == {"A": "1", "B": "20", "C": "3"}
    assert p.scaling == {"workers": 6, "worker_timeout": 30}
    assert p.cluster == {"threads_per_worker": 1, "processes": True}
    assert [c.name for c in p.chain] == ["base.yaml", "mine.yaml"]


def test_a_site_profile_may_extend_the_packaged_one_of_the_same_name(layers):
    write(layers["site"] / "local.yaml", "extends: local\nscaling: {workers: 7}\n")
    p = profiles.load("local")
    assert p.scaling["workers"] == 7
    assert p.cluster["threads_per_worker"] == 1          # inherited from the packaged local
    assert p.chain[0] == profiles.PACKAGED_DIR.joinpath("local.yaml").resolve()


def test_extends_cycle_is_an_error(layers):
    write(layers["site"] / "a.yaml", "extends: b\nbackend: local\n")
    write(layers["site"] / "b.yaml", "extends: a\n")
    with pytest.raises(ProfileError, match="extends cycle"):
        profiles.load("a")


def test_set_overrides_any_key_with_yaml_typed_values():
    p = profiles.load("local", ["scaling.workers=5", "environment.FOO=bar", "cluster.processes=false",
                                "storage.keep_task_files=true"])
    assert p.scaling["workers"] == 5
    assert p.environment["FOO"] == "bar"
    assert p.cluster["processes"] is False
    assert p.storage["keep_task_files"] is True


@pytest.mark.parametrize("item, message", [
    ("scaling.workers", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("scaling.workers=two", "scaling.workers: expected integer"),
    ("scaling.wrkers=2", "unknown key scaling.wrkers"),
    ("cluster.thread_per_worker=2", "did you mean threads_per_worker"),
    ("backend=nomad", "backend: 'nomad' is not one of"),
])
def test_bad_set_names_the_override(item, message):
    with pytest.raises(ProfileError) as info:
        profiles.load("local", [item])
    assert message in str(info.value)
    assert "--set" in str(info.value)


@pytest.mark.parametrize("body, message", [
    ("backend: local\nscaling: {workers: 2, wrokers: 3}\n", "unknown key scaling.wrokers"),
    ("backend: local\nscaling: {workers: many}\n", "scaling.workers: expected integer"),
    ("backend: nomad\n", "backend: 'nomad' is not one of"),
    ("backend: local\nfoo: 1\n", "unknown key foo"),
    ("backend: local\nscaling: [1, 2\n", "YAML syntax error"),
    ("scaling: {workers: 2}\n", "missing required key"),
    ("backend: local\ncluster: {n_wrkers: 2}\n", "unknown key cluster.n_wrkers for backend local"),
    ("backend: local\nenvironment: {'1BAD': x}\n", "not a valid environment variable name"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_invalid_profile_file_names_file_and_key(tmp_path, body, message):
    path = write(tmp_path / "bad.yaml", body)
    with pytest.raises(ProfileError) as info:
        profiles.load(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_error_in_a_base_profile_names_the_base_file(layers):
    base = write(layers["site"] / "base.yaml", "backend: local\nscaling: {workers: zero}\n")
    write(layers["user"] / "child.yaml", "extends: base\n")
    with pytest.raises(ProfileError, match=str(base)):
        profiles.load("child")


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ProfileError, match=r"'nosuch': not found .*local"):
        profiles.load("nosuch")


def test_cli_list_show_validate_render(layers):
    write(layers["user"] / "mine.yaml", "extends: local\nscaling: {workers: 3}\n")
    listed = run_resqmp("profiles", "list", env={"XDG_CONFIG_HOME": str(layers["user"].parent.parent),
                                                   "RESQMP_PROFILE_PATH": ""}, check=0).stdout
    assert "mine" in listed and "local" in listed and "user:" in listed
    shown = run_resqmp("profiles", "show", str(layers["user"] / "mine.yaml"), check=0).stdout
    assert "workers: 3" in shown and "NUMBA_NUM_THREADS: '1'" in shown
    rendered = run_resqmp("profiles", "render", "local", "--set", "scaling.workers=4", check=0).stdout
    assert "pre-spawn-environ" in rendered and "workers: 4" in rendered
    run_resqmp("profiles", "validate", "local", str(layers["user"] / "mine.yaml"), check=0)


def test_cli_validate_reports_bad_profile_in_one_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "backend: local\nscaling: {workers: -1}\n")
    proc = run_resqmp("profiles", "validate", str(bad))
    assert proc.returncode == ExitCode.PROFILE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "scaling.workers" in lines[0]
    assert "Traceback" not in proc.stderr


def test_every_packaged_profile_validates():
    proc = run_resqmp("profiles", "validate", check=0)
    for name in ("local",):
        assert f"ok       {name} " in proc.stdout


def test_validate_takes_folders_and_renders_to_catch_keys_of_another_scheduler(tmp_path):
    folder = tmp_path / "site"
    write(folder / "good.yaml", "extends: slurm\ncluster: {queue: compute}\n")
    proc = run_resqmp("profiles", "validate", folder, check=0)
    assert "ok       good (slurm)" in proc.stdout
    write(folder / "bad.yaml", "extends: slurm\ncluster: {resource_spec: h_vmem=2G}\n")
    proc = run_resqmp("profiles", "validate", folder)
    assert proc.returncode == ExitCode.PROFILE
    assert "resource_spec is not an option of SLURMCluster" in proc.stderr
    assert "ok       good (slurm)" in proc.stdout            # the other file still reported
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_resqmp("profiles", "validate", empty).returncode == ExitCode.PROFILE
