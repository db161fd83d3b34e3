"""One rule for worker environment values on every backend (issue 9): `$NAME` and `${NAME}` become
NAME's value in the environment the worker starts with (the empty string when unset there);
nothing else is interpreted: no `$(...)`, backticks, `${NAME:-x}`, `~`, globbing or escapes.
Checked where it runs: local workers, real SLURM and SGE jobs, the PBS/LSF job scripts and the
Kubernetes/Helm args prefix through a real shell, the manifests against the Kubernetes schemas."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import TESTS, run_resqmp
from hpc_fixtures import PROFILES, launch, write_batch
from k8s_fixtures import helm, helm_template, validate_dask_resource, validate_k8s  # noqa: F401 - fixture
from resqmp import profiles
from resqmp.backends import for_profile, kubernetes
from resqmp.errors import ExitCode
from resqmp.worker_env import expand, shell_exports, worker_environment
from test_bad_inputs import assert_one_line_error

UNSET = "RESQMP_TEST_NEVER_SET"


def cases(marker: Path) -> dict[str, tuple[str, str | None]]:
    """name -> (value, expected with HOME=/home/u and UNSET unset; None: the value as written)."""
    return {
        "CMD": (f"$(touch {marker}-cmd)", None),
        "TICKS": (f"`touch {marker}-tick`", None),
        "BRACED": ("${HOME}/x", "/home/u/x"),
        "PLAIN": ("$HOME", "/home/u"),
        "LONGEST": ("$HOME_DIR:${HOME}_DIR", ":/home/u_DIR"),
        "MISSING": ("a${%s}b$%s" % (UNSET, UNSET), "ab"),
        "DEFAULTED": ("${%s:-fallback}" % UNSET, None),
        "TILDE_GLOB": ("~/x * [a]", None),
        "QUOTES": ("it's \"q\" \\ back\\slash;|&<>", None),
        "NEWLINE": ("one\ntwo", None),
        "DOLLARS": ("$1 $$ $ end$ ${}", None),
        "EMPTY": ("", None),
    }


def expected(table) -> dict[str, str]:
    return {name: value if want is None else want for name, (value, want) in table.items()}


BASE = {"HOME": "/home/u", "PATH": os.environ["PATH"]}


def run_in_sh(shell: str, script: str, names) -> dict[str, str]:
    """Run script in `shell` with only BASE in the environment; the values of names afterwards."""
    dump = "; ".join(f'printf "%s\\0" "${{{n}}}"' for n in names)
    out = subprocess.run([shell, "-c", f"{script}\n{dump}"], env=BASE, capture_output=True, text=True, check=True)
    return dict(zip(names, out.stdout.split("\0")))


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def assert_nothing_ran(marker: Path):
    assert not list(marker.parent.glob(marker.name + "*")), "a value ran as a command"


@pytest.mark.parametrize("shell", [s for s in ("sh", "bash", "dash") if shutil.which(s)])
def test_the_exported_words_are_the_rule_in_every_shell(shell, marker):
    table = cases(marker)
    env = {n: v for n, (v, _) in table.items()}
    got = run_in_sh(shell, "\n".join(shell_exports(env)), list(env))
    assert got == expected(table) == {n: expand(v, BASE) for n, v in env.items()}
    assert_nothing_ran(marker)


# --------------------------------------------------------------------------------------- launch

def env_profile(tmp_path, extends: str, env: dict[str, str]) -> Path:
    path = tmp_path / f"env-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"extends": extends, "environment": env}, sort_keys=False))
    return path


def launch_recording(profile, folder: Path, names) -> dict:
    """One env_wrapper task through `resqmp launch`: what the worker saw."""
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "record.json"
    batch = write_batch(folder / "batch.yaml", "wrappers_for_tests:env_wrapper",
                        [{"record_file": str(record), "names": [*names, "HOME"]}])
    launch(profile, batch, folder / "out.epc", "--workers", "1", check=0)
    return json.loads(record.read_text())


def test_local_workers(tmp_path, marker):
    table = cases(marker)
    env = {n: v for n, (v, _) in table.items()}
    seen = launch_recording(env_profile(tmp_path, "local", env), tmp_path / "run", env)
    home = seen["env"]["HOME"]
    assert home == os.environ["HOME"]                       # the launcher's, which local workers start with
    assert {n: seen["env"][n] for n in env} == {n: expand(v, {"HOME": home}) for n, v in env.items()}
    assert_nothing_ran(marker)


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_batch_scheduler_workers(scheduler, request, hpc_workdir):
    """In a real job script: nothing runs, literal values arrive as written, ${HOME} is the job's."""
    request.getfixturevalue(scheduler)
    folder = hpc_workdir / f"env-{scheduler}-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    marker = folder / "pwned"
    table = cases(marker)
    env = {n: v for n, (v, _) in table.items()}
    profile = env_profile(folder, str(PROFILES[scheduler]), {**env, "PYTHONPATH": str(TESTS)})
    seen = launch_recording(profile, folder / "run", env)
    home = seen["env"]["HOME"]
    assert home and home == seen["HOME"]
    assert {n: seen["env"][n] for n in env} == {n: expand(v, {"HOME": home}) for n, v in env.items()}
    assert seen["env"]["BRACED"] == f"{home}/x" and seen["env"]["MISSING"] == "ab"
    assert_nothing_ran(marker)


# ------------------------------------------------------------------------------- rendered forms

@pytest.mark.parametrize("backend", ["pbs", "lsf"])
def test_pbs_and_lsf_job_scripts_export_the_rule(backend, tmp_path, marker):
    """No PBS or LSF server here: the rendered job script's exports, run by a real shell."""
    table = cases(marker)
    p = profiles.load(str(env_profile(tmp_path, backend, {n: v for n, (v, _) in table.items()})))
    script = for_profile(p, worker_environment(p)).render()
    lines = script.splitlines()
    before_worker = lines[:next(i for i, ln in enumerate(lines) if "distributed.cli.dask_worker" in ln)]
    got = run_in_sh("bash", "\n".join(before_worker), list(table))       # directives are comments
    assert got == expected(table)
    assert_nothing_ran(marker)


def assert_kubernetes_interprets_nothing(value: str, original: str) -> None:
    """Kubernetes reads `$(VAR)` and reduces `$$` to `$`: with every `$` doubled, it only undoes
    the doubling."""
    assert "$" not in value.replace("$$", "") and value.replace("$$", "$") == original


def check_container(container: dict, table: dict, marker: Path, command: list[str]) -> None:
    """Pod env + args prefix of one container give exactly the rule's values."""
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    originals = {n: v for n, (v, _) in table.items()}
    for name, value in env.items():
        if name in originals:
            assert_kubernetes_interprets_nothing(value, originals[name])
    args = container["args"]
    assert args[:2] == ["sh", "-c"] and args[3] == "resqmp-env" and args[4:4 + len(command)] == command, args
    # the prefix, run by a real sh (its values refer to none of the pod env's: see
    # test_a_reference_to_another_worker_variable_is_refused)
    pod_env = {n: v.replace("$$", "$") for n, v in env.items()}
    exported = run_in_sh("sh", args[2].removesuffix('; exec "$@"'), list(table))
    want = expected(table)
    for name in table:
        if name in pod_env:
            assert pod_env[name] == want[name], name
        else:
            assert exported[name] == want[name], name
    assert_nothing_ran(marker)


def test_kubernetes_pods_follow_the_rule(tmp_path, marker):
    table = cases(marker)
    p = profiles.load(str(env_profile(tmp_path, "kubernetes", {n: v for n, (v, _) in table.items()})))
    spec = kubernetes.cluster_spec(p, worker_environment(p))
    validate_dask_resource(spec)
    for part, command in (("scheduler", ["dask", "scheduler"]), ("worker", ["dask", "worker"])):
        pod = spec["spec"][part]["spec"]
        validate_k8s({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod})
        check_container(pod["containers"][0], table, marker, command)


def test_the_chart_follows_the_rule(helm, tmp_path, marker):
    table = cases(marker)
    objects = helm_template(helm, values={"env": {n: v for n, (v, _) in table.items()}}, tmp_dir=tmp_path)
    commands = {"worker": ["dask", "worker"], "scheduler": ["dask", "scheduler"],
                "launcher": ["resqmp", "launch"]}
    seen = set()
    for obj in objects:
        validate_k8s(obj)
        if obj["kind"] in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                check_container(c, table, marker, commands[c["name"]])
                seen.add(c["name"])
    assert seen == set(commands)
    # operator mode: the profile carries the values as written; resqmp's kubernetes backend applies the rule
    objects = helm_template(helm, "cluster.mode=operator", values={"env": {"CMD": table["CMD"][0]}}, tmp_dir=tmp_path)
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert yaml.safe_load(cm["data"]["profile.yaml"])["environment"]["CMD"] == table["CMD"][0]


def test_external_render_gives_the_exports_for_whoever_starts_the_workers(tmp_path, marker):
    table = cases(marker)
    p = profiles.load(str(env_profile(tmp_path, "external", {n: v for n, (v, _) in table.items()})))
    rendered = yaml.safe_load(for_profile(p, worker_environment(p)).render())
    got = run_in_sh("sh", "\n".join(rendered["as sh exports"]), list(table))
    assert got == expected(table)
    assert_nothing_ran(marker)


def test_a_reference_to_another_worker_variable_is_refused(helm, tmp_path):
    """Whether B would see A's new value or its old one depends on the order a backend sets them:
    refused, on every path (PATH=/opt/bin:$PATH, a variable's own earlier value, is fine)."""
    profile = env_profile(tmp_path, "local", {"A": "x", "B": "${A}/y", "PATH": "/opt/bin:$PATH"})
    proc = run_resqmp("profiles", "show", profile)
    assert_one_line_error(proc, ExitCode.PROFILE, profile.name, "B='${A}/y' refers to A")
    ok = env_profile(tmp_path, "slurm", {"PATH": "/opt/bin:$PATH"})
    assert run_resqmp("profiles", "show", ok).returncode == 0
    proc = helm_template(helm, values={"env": {"A": "x", "B": "${A}/y"}}, tmp_dir=tmp_path, check=False)
    assert proc.returncode != 0 and "B=\"${A}/y\" refers to A" in proc.stderr
