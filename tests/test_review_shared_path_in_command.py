"""A path is data, also once it is in the worker's command line.

resqmp expands `storage.shared_directory` (and `cluster.shared_temp_directory`) in the launcher
(`$NAME`, `${NAME}`, `~`: resqmp/paths.py) and writes the run's TLS files there; the job script
then names them on the worker's command line (`--tls-ca-file DIR/...`). dask-jobqueue joins that
line with spaces, unquoted, so the job's shell read the launcher's path a second time: `$(...)`
or backticks in a folder name ran on the compute node, a space split the argument, and the worker
looked for its certificate elsewhere than where the launcher wrote it.

The rendered scripts' worker lines are run by a real bash (argument printing instead of the
worker); the last test launches real SLURM worker jobs under such a folder."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from resqmp import profiles
from resqmp.backends import jobqueue as jq
from resqmp.backends import for_profile
from resqmp.worker_env import worker_environment

# a real folder name: `$(>PWNED)` makes an empty file PWNED in the shell's working directory
HOSTILE = "sh$(>PWNED)a`>PWNED2`red"


def worker_words(script: str, cwd: Path, env: dict | None = None) -> list[str]:
    """The worker command of a job script as bash splits it (each argument once expanded), run in
    cwd by bash (in `env`: the job's environment) with the interpreter replaced by a printer of
    its arguments."""
    (line,) = [ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln]
    args = line.split(" -m distributed.cli.dask_worker ", 1)[1]
    # render's placeholders for run-specific values, as the run fills them in
    args = (args.replace(jq.RENDER_SCHEDULER, "scheduler:8786").replace(jq.RENDER_WORKER_NAME, "worker-0")
            .replace(jq.RENDER_TLS_DIR, ".resqmp-tls-run"))
    proc = subprocess.run(["bash", "-c", f"printf '%s\\0' {args}"], cwd=cwd, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\0")[:-1]


def value_of(words: list[str], option: str) -> str:
    return words[words.index(option) + 1]


@pytest.mark.parametrize("backend", ["slurm", "sge", "pbs", "lsf"])
@pytest.mark.parametrize("name", [HOSTILE, "my shared dir"])
def test_the_worker_reads_its_tls_files_where_the_launcher_writes_them(backend, name, tmp_path):
    shared = tmp_path / name
    shared.mkdir()
    run = tmp_path / "cwd"
    run.mkdir()
    # the logs (and SGE's start directory) elsewhere: a folder a directive cannot carry is refused
    # (test_directive_paths); here the shared directory is only in the worker's command line
    others = [f"cluster.log_directory={tmp_path}/logs"] + (['cluster.job_extra_directives=["-cwd"]']
                                                           if backend == "sge" else [])
    p = profiles.load(backend, [f"storage.shared_directory={shared}", *others])
    script = for_profile(p, worker_environment(p)).render()
    words = worker_words(script, run)
    tls = shared / ".resqmp-tls-run"
    assert value_of(words, "--tls-ca-file") == str(tls / "ca.pem"), script
    assert value_of(words, "--tls-cert") == str(tls / "cert.pem"), script
    assert value_of(words, "--tls-key") == str(tls / "key.pem"), script
    assert sorted(os.listdir(run)) == [], "the shell ran a piece of the folder name"


def test_site_certificate_files_are_data_too(tmp_path):
    certs = tmp_path / HOSTILE
    certs.mkdir()
    run = tmp_path / "cwd"
    run.mkdir()
    p = profiles.load("slurm", [f"storage.shared_directory={tmp_path}",
                                f'cluster.security={{tls_ca_file: "{certs}/ca.pem", tls_worker_cert: "{certs}/c.pem",'
                                f' tls_worker_key: "{certs}/k.pem"}}'])
    words = worker_words(for_profile(p, worker_environment(p)).render(), run)
    assert value_of(words, "--tls-ca-file") == f"{certs}/ca.pem"
    assert value_of(words, "--tls-key") == f"{certs}/k.pem"
    assert sorted(os.listdir(run)) == []


def test_a_slurm_launch_under_such_a_folder_runs_nothing_of_its_name(slurm, hpc_workdir, hpc_example):
    """Real SLURM worker jobs, their TLS files in a shared directory named like HOSTILE."""
    from hpc_fixtures import PROFILES, SHARED, launch
    shared = hpc_workdir / f"{uuid.uuid4().hex[:6]}-{HOSTILE}"
    shared.mkdir()
    out = hpc_workdir / f"out-{uuid.uuid4().hex[:6]}" / "faults.epc"
    out.parent.mkdir()
    proc = launch(PROFILES["slurm"], hpc_example["batch"], out, "--set", f"storage.shared_directory={shared}",
                  "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.exists()
    # the jobs start in the submit directory (the launcher's), SGE's in the shared one: nowhere a PWNED
    for folder in (Path.cwd(), shared, SHARED, hpc_workdir, out.parent, Path.home()):
        assert not list(folder.glob("PWNED*")), folder


# --------------------------------------------------------------------------- local_directory, worker_extra_args

JOB_ENV = {"PATH": os.environ["PATH"], "HOME": "/home/job user", "TMPDIR": "/scratch/job 42"}


def render_words(backend: str, tmp_path: Path, *sets: str, env: dict | None = None) -> tuple[list[str], Path]:
    run = tmp_path / "cwd"
    run.mkdir(exist_ok=True)
    p = profiles.load(backend, [f"storage.shared_directory={tmp_path}", *sets])
    return worker_words(for_profile(p, worker_environment(p)).render(), run, env=env or JOB_ENV), run


@pytest.mark.parametrize("backend", ["slurm", "sge", "pbs", "lsf"])
@pytest.mark.parametrize("local, seen", [
    ("/scratch/my dir", "/scratch/my dir"),
    (f"/scratch/{HOSTILE}", f"/scratch/{HOSTILE}"),
    ("/scratch/*", "/scratch/*"),                       # no globbing
    ("${TMPDIR:-/tmp}", "/scratch/job 42"),             # resqmp's default: the job's TMPDIR, one word
    ("$TMPDIR/dask work", "/scratch/job 42/dask work"),
    ("${TMPDIR}/w", "/scratch/job 42/w"),
    ("${NOT_SET_IN_JOB:-/tmp/a b}", "/tmp/a b"),
    ("${NOT_SET_IN_JOB:-/tmp/$(>PWNED)}", "/tmp/$(>PWNED)"),   # the default is text, as in the launcher's rule
    ("~/scratch dir", "/home/job user/scratch dir"),
])
def test_local_directory_is_one_word_and_only_its_variables_expand(backend, local, seen, tmp_path):
    """local_directory went into the worker's command line unquoted: a space split it (the worker
    got `--local-directory /scratch/my` and a stray argument `dir`), and `$(...)` in it ran. Now
    it is one word in which the job's shell expands `~`, `$NAME`, `${NAME}` and `${NAME:-default}`
    (the rule of storage paths, applied by the job's shell) and nothing else."""
    words, run = render_words(backend, tmp_path, f"cluster.local_directory={local}")
    assert value_of(words, "--local-directory") == seen, words
    assert sorted(os.listdir(run)) == []


@pytest.mark.parametrize("backend", ["slurm", "sge", "pbs", "lsf"])
def test_each_worker_extra_arg_is_one_argument(backend, tmp_path):
    """A site's worker_extra_args are arguments, one per item, passed as written: dask-worker's
    `--resources "GPU=2 MEMORY=10e9"` is one argument; nothing in an item runs or expands."""
    args = ["--resources", "GPU=2 MEMORY=10e9", "--name-suffix", f"{HOSTILE} $HOME *"]
    words, run = render_words(backend, tmp_path, f"cluster.worker_extra_args={args!r}".replace("'", '"'))
    i = words.index("--resources")
    assert words[i:i + 4] == args, words
    assert value_of(words, "--preload") == "resqmp.worker_preload"      # resqmp's own still there
    assert "--lifetime" in words and "--tls-ca-file" in words
    assert sorted(os.listdir(run)) == []


def test_site_worker_extra_args_from_dask_config_are_arguments_too(tmp_path):
    """The same for the site's jobqueue.slurm.worker-extra-args and local-directory (a layer below
    the profiles), in what `resqmp profiles render` prints."""
    from conftest import run_resqmp
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "jobqueue.yaml").write_text(
        'jobqueue:\n  slurm:\n    worker-extra-args: ["--resources", "GPU=2 MEMORY=10e9"]\n'
        '    local-directory: "/site scratch/$USER"\n')
    script = run_resqmp("profiles", "render", "slurm", "--set", f"storage.shared_directory={tmp_path}",
                        env={"DASK_CONFIG": str(tmp_path / "dask")}, check=0).stdout
    run = tmp_path / "cwd"
    run.mkdir()
    words = worker_words(script, run, env={**JOB_ENV, "USER": "someone"})
    assert value_of(words, "--resources") == "GPU=2 MEMORY=10e9", words
    assert value_of(words, "--local-directory") == "/site scratch/someone", words
