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


def worker_words(script: str, cwd: Path) -> list[str]:
    """The worker command of a job script as bash splits it (each argument once expanded), run in
    cwd by bash with the interpreter replaced by a printer of its arguments."""
    (line,) = [ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln]
    args = line.split(" -m distributed.cli.dask_worker ", 1)[1]
    # render's placeholders for run-specific values, as the run fills them in
    args = (args.replace(jq.RENDER_SCHEDULER, "scheduler:8786").replace(jq.RENDER_WORKER_NAME, "worker-0")
            .replace(jq.RENDER_TLS_DIR, ".resqmp-tls-run"))
    proc = subprocess.run(["bash", "-c", f"printf '%s\\0' {args}"], cwd=cwd, capture_output=True, text=True)
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
    p = profiles.load(backend, [f"storage.shared_directory={shared}"])
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
