"""Job scripts of the batch-scheduler backends, without a scheduler: what `resqmp profiles render`
prints is what start() submits (directives, worker environment first in the prologue, python,
TLS options, walltime-derived lifetime); every shipped profile and template validates and renders.
PBS and LSF cannot be installed here: these tests are their coverage."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, run_resqmp
from resqmp import profiles
from resqmp.backends import for_profile
from resqmp.backends import jobqueue as jq
from resqmp.errors import ExitCode, ProfileError
from resqmp.worker_env import worker_environment

SCHEDULERS = ("slurm", "sge", "pbs", "lsf")
DIRECTIVE = {"slurm": "#SBATCH", "sge": "#$", "pbs": "#PBS", "lsf": "#BSUB"}
WALLTIME_LINE = {"slurm": "#SBATCH -t 01:00:00", "sge": "#$ -l h_rt=01:00:00",
                 "pbs": "#PBS -l walltime=01:00:00", "lsf": "#BSUB -W 01:00"}
TEMPLATES = sorted((REPO / "hpc-templates").glob("*/*.yaml"))
SHIPPED = sorted((REPO / "resqmp" / "profiles").glob("*.yaml")) + sorted((REPO / "ci" / "profiles").glob("*.yaml")) \
    + TEMPLATES


def render(ref, *overrides):
    p = profiles.load(str(ref), overrides)
    return for_profile(p, worker_environment(p)).render()


def worker_line(script: str) -> str:
    lines = [ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln]
    assert len(lines) == 1, script
    return lines[0]


# --------------------------------------------------------------------------- packaged profiles

@pytest.mark.parametrize("backend", SCHEDULERS)
def test_packaged_profile_renders_directives_env_prologue_and_tls_worker(backend):
    script = render(backend)
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    directives = [ln for ln in lines if ln.startswith(DIRECTIVE[backend] + " ")]
    assert WALLTIME_LINE[backend] in directives, script
    assert any("resqmp-worker" in d for d in directives)             # job name
    # the worker environment is exported before the worker command, NUMBA_NUM_THREADS first
    exports = [i for i, ln in enumerate(lines) if ln.startswith("export ")]
    worker = next(i for i, ln in enumerate(lines) if "distributed.cli.dask_worker" in ln)
    assert exports and max(exports) < worker
    assert 'export NUMBA_NUM_THREADS=1' in lines
    assert 'export HDF5_USE_FILE_LOCKING=FALSE' in lines
    assert 'export NUMBA_CACHE_DIR="${HOME}"/.cache/resqmp/numba' in lines   # expanded by the worker's shell
    # every directive comes before the first command (schedulers stop reading at the first command)
    assert max(i for i, ln in enumerate(lines) if ln.startswith(DIRECTIVE[backend] + " ")) < min(exports)
    cmd = worker_line(script)
    python, m, module, address = cmd.split()[:4]
    assert os.path.samefile(python, sys.executable)               # default: the launching interpreter
    assert (m, module, address) == ("-m", "distributed.cli.dask_worker", "tls://" + jq.RENDER_SCHEDULER)
    for opt in ("--protocol tls://", "--tls-ca-file ", "--tls-cert ", "--tls-key ", "--nthreads 1", "--nanny",
                "--preload resqmp.worker_preload"):
        assert opt in cmd, cmd
    shared = os.path.expandvars("${HOME}/resqmp-shared")
    assert f"--tls-key {shared}/{jq.RENDER_TLS_DIR}/key.pem" in cmd
    # 1 h walltime: lifetime 3600 - 360 (margin) - 180 (stagger) seconds, stagger 180 s
    assert "--lifetime 3060s --lifetime-stagger 180s" in cmd


def test_scheduler_specific_directives():
    assert "#SBATCH --mem=4G" in render("slurm") and "#SBATCH --cpus-per-task=1" in render("slurm")
    pbs = render("pbs")
    assert "#PBS -l select=1:ncpus=1:mem=" in pbs
    lsf = render("lsf", "cluster.lsf_units=MB", "cluster.cores=2", "cluster.processes=2")
    assert "#BSUB -n 2" in lsf and '#BSUB -R "span[hosts=1]"' in lsf and "#BSUB -M 4295" in lsf
    assert "--nthreads 1" in worker_line(lsf)                      # 2 single-threaded processes
    sge = render("sge", "cluster.resource_spec=h_vmem=4G", "cluster.queue=all.q")
    assert "#$ -l h_vmem=4G" in sge and "#$ -q all.q" in sge
    # -cwd would start the job in the launcher's folder: resqmp starts it in the shared directory
    assert "#$ -cwd" not in sge and f"#$ -wd {os.path.expandvars('${HOME}/resqmp-shared')}" in sge


@pytest.mark.parametrize("backend", SCHEDULERS)
def test_profile_prologue_follows_the_worker_environment_and_may_override_it(backend, tmp_path):
    prof = tmp_path / f"site-{backend}.yaml"
    prof.write_text(textwrap.dedent(f"""\
        extends: {backend}
        cluster:
          job_script_prologue: ["module load python/3.11", "source /apps/venv/bin/activate"]
          python: "apptainer exec --bind /shared /shared/resqmp.sif python"
          job_extra_directives: ["--extra-site-directive"]
        environment:
          NUMBA_CACHE_DIR: "/shared/$USER/numba"
          ODD: 'a "quoted" `tick` \\ value'
        """))
    script = render(prof)
    lines = script.splitlines()
    numba = lines.index('export NUMBA_NUM_THREADS=1')
    module = lines.index("module load python/3.11")
    assert numba < module < lines.index("source /apps/venv/bin/activate")
    assert 'export NUMBA_CACHE_DIR=/shared/"${USER}"/numba' in lines          # not expanded on the client
    assert "export ODD='a \"quoted\" `tick` \\ value'" in lines               # single-quoted: nothing interpreted
    assert f"{DIRECTIVE[backend]} --extra-site-directive" in lines
    assert worker_line(script).startswith(
        "apptainer exec --bind /shared /shared/resqmp.sif python -m distributed.cli.dask_worker tls://")
    # the exported value survives the worker's shell exactly
    export = next(ln for ln in lines if ln.startswith("export ODD="))
    out = subprocess.run(["bash", "-c", f'{export}; printf %s "$ODD"'], capture_output=True, text=True).stdout
    assert out == 'a "quoted" `tick` \\ value'


def test_security_false_renders_a_plain_tcp_worker():
    cmd = worker_line(render("slurm", "cluster.security=false"))
    assert " tcp://" + jq.RENDER_SCHEDULER in cmd and " tls://" not in cmd and "--tls-" not in cmd


def test_null_walltime_and_processes_fall_through_to_the_layers_below():
    """null in a profile or --set means "not set here": the site's dask config, else resqmp's
    default, decides (processes: one single-threaded worker per core)."""
    script = render("slurm", "cluster.walltime=null", "cluster.processes=null", "cluster.cores=4",
                    "cluster.memory=8GiB")
    assert "#SBATCH -t 01:00:00" in script                              # resqmp's default
    assert " ".join(jq.lifetime_args("slurm", "01:00:00")) in worker_line(script)
    assert "--nworkers 4" in worker_line(script) and "--nthreads 1" in worker_line(script)


def test_explicit_lifetime_is_kept_and_not_duplicated():
    cmd = worker_line(render("slurm", 'cluster.worker_extra_args=["--lifetime", "50m", "--lifetime-stagger", "5m"]'))
    assert cmd.count("--lifetime ") == 1 and "--lifetime 50m --lifetime-stagger 5m" in cmd


@pytest.mark.parametrize("backend,walltime,seconds", [
    ("slurm", "01:00:00", 3600), ("slurm", "90", 5400), ("slurm", "30:00", 1800), ("slurm", "1-00:00:00", 86400),
    ("slurm", "2-12", 216000), ("sge", "01:30:00", 5400), ("sge", "7200", 7200), ("pbs", "48:00:00", 172800),
    ("lsf", "04:00", 14400), ("lsf", "45", 2700), ("slurm", "bogus", None)])
def test_walltime_parsing(backend, walltime, seconds):
    assert jq.walltime_seconds(backend, walltime) == seconds


def test_lifetime_retires_before_walltime_with_stagger():
    for backend, walltime in (("slurm", "00:01:00"), ("sge", "12:00:00"), ("lsf", "24:00")):
        args = jq.lifetime_args(backend, walltime)
        secs = jq.walltime_seconds(backend, walltime)
        lifetime, stagger = (int(a.rstrip("s")) for a in (args[1], args[3]))
        assert lifetime + stagger < secs and stagger > 0
        assert lifetime + stagger <= secs - min(0.1 * secs, 600) + 1
    with pytest.raises(ProfileError, match="walltime"):
        jq.lifetime_args("slurm", "not-a-time")


# --------------------------------------------------------------------------- option checks

def test_cluster_options_cover_the_documented_jobqueue_kwargs():
    options = jq.cluster_options()
    for key in ("cores", "memory", "processes", "queue", "account", "project", "walltime", "job_extra_directives",
                "job_script_prologue", "python", "worker_extra_args", "interface", "local_directory",
                "log_directory", "shared_temp_directory", "security", "scheduler_options", "job_directives_skip",
                "resource_spec", "lsf_units", "job_name", "death_timeout"):
        assert key in options, key
    for key in ("n_workers", "loop", "dashboard_address", "env_extra", "extra", "job_cls"):
        assert key not in options, key


def test_unknown_and_foreign_cluster_keys_are_named(tmp_path):
    with pytest.raises(ProfileError, match="cluster.walltim"):
        profiles.load("slurm", ["cluster.walltim=01:00:00"])
    # resource_spec is an option of SGE/PBS, not of SLURMCluster: render says so
    with pytest.raises(ProfileError, match=r"resource_spec is not an option of SLURMCluster.*sge, pbs"):
        render("slurm", "cluster.resource_spec=h_vmem=4G")


def test_cores_and_memory_null_fall_through_to_resqmps_defaults():
    script = render("slurm", "cluster.memory=null", "cluster.cores=null")
    assert "#SBATCH --mem=4G" in script and "#SBATCH --cpus-per-task=1" in script


def test_render_writes_nothing(tmp_path):
    shared = tmp_path / "not-there" / "shared"
    script = render("slurm", f"storage.shared_directory={shared}", f"cluster.log_directory={tmp_path}/logs/x")
    assert f"#SBATCH -o {tmp_path}/logs/x/resqmp-worker-%J.out" in script
    assert not (tmp_path / "logs").exists() and not shared.exists()


def test_shared_directory_is_required():
    with pytest.raises(ProfileError, match="storage.shared_directory must be set"):
        render("slurm", "storage.shared_directory=null")


# --------------------------------------------------------------------------- render == start

@pytest.mark.parametrize("backend", SCHEDULERS)
def test_rendered_script_is_the_script_start_submits(backend, tmp_path):
    """start() runs the scheduler in this process and writes the TLS files, but submits nothing
    until scaled: its job script is the rendered one with the run-specific values filled in."""
    overrides = [f"storage.shared_directory={tmp_path}"]
    p = profiles.load(backend, overrides)
    env = worker_environment(p)
    rendered = for_profile(p, env).render()
    cluster = for_profile(p, env).start()
    try:
        tls_dir = Path(cluster.tls_dir)
        actual = cluster.job_script()
        expected = (rendered.replace("tls://" + jq.RENDER_SCHEDULER, cluster.scheduler_address)
                    .replace(jq.RENDER_WORKER_NAME, "dummy-name")
                    .replace(str(tmp_path / jq.RENDER_TLS_DIR), str(tls_dir)))
        assert actual == expected
        # the TLS folder: in the shared directory, owner only
        assert tls_dir.parent == tmp_path and tls_dir.name.startswith(jq.TLS_PREFIX)
        assert (tls_dir.stat().st_mode & 0o777) == 0o700
        assert sorted(f.name for f in tls_dir.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
        for f in tls_dir.iterdir():
            assert (f.stat().st_mode & 0o777) == 0o600 and f.stat().st_uid == os.getuid()
        assert cluster.scheduler_address.startswith("tls://")
        assert cluster.scheduler_view() == "no job was submitted"
    finally:
        cluster.close()
    assert not tls_dir.exists()                       # removed with the cluster


def test_dashboard_off_by_default_and_http_on_loopback_only(tmp_path):
    p = profiles.load("slurm", [f"storage.shared_directory={tmp_path}"])
    cluster = for_profile(p, worker_environment(p)).start()
    try:
        assert cluster.dashboard_link == ""
        server = cluster.scheduler.http_server
        hosts = {s.getsockname()[0] for s in server._sockets.values()}
        assert hosts == {"127.0.0.1"}, hosts
        port = next(iter(server._sockets.values())).getsockname()[1]
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
        for page in ("/status", "/info/main/workers.html", "/json/identity.json"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=5)
            assert e.value.code == 404
    finally:
        cluster.close()


def test_dashboard_when_the_profile_asks_for_it(tmp_path):
    p = profiles.load("slurm", [f"storage.shared_directory={tmp_path}",
                                'cluster.scheduler_options={dashboard_address: "127.0.0.1:0"}'])
    cluster = for_profile(p, worker_environment(p)).start()
    try:
        link = cluster.dashboard_link
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", link), link
        assert urllib.request.urlopen(link, timeout=10).status == 200
    finally:
        cluster.close()


# --------------------------------------------------------------------------- shipped files, CLI

def test_every_shipped_profile_and_template_validates():
    out = run_resqmp("profiles", "validate", *SHIPPED, check=0).stdout.splitlines()
    assert len(out) == len(SHIPPED) and all(line.startswith("ok ") for line in out), out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_profile_and_template_renders(path):
    """What `resqmp profiles render PATH` runs (the CLI itself: test_cli_render_prints_the_job_script)."""
    p = profiles.load(str(path))
    script = for_profile(p, worker_environment(p, expand=p.backend == "local")).render()
    assert script.strip()
    if p.backend in SCHEDULERS:
        assert 'export NUMBA_NUM_THREADS=1' in script.splitlines()
        assert "--tls-cert " in script and " tls://" in script


@pytest.mark.parametrize("backend", SCHEDULERS)
def test_cli_render_prints_the_job_script(backend):
    out = run_resqmp("profiles", "render", backend, check=0).stdout
    # the same script; only the default python differs (the resqmp command's interpreter path)
    python = worker_line(out).split()[0]
    assert os.path.samefile(python, sys.executable)
    assert out == render(backend).replace(sys.executable + " -m ", python + " -m ")


@pytest.mark.parametrize("backend", SCHEDULERS)
def test_each_template_folder_is_complete(backend):
    folder = REPO / "hpc-templates" / backend
    assert (folder / f"{backend}.yaml").is_file() and (folder / "README.md").is_file()
    launchers = list(folder.glob("resqmp-launch.*"))
    assert len(launchers) == 1
    text = launchers[0].read_text()
    assert "resqmp" in text and " launch --profile " in text and DIRECTIVE[backend] in text
    assert subprocess.run(["bash", "-n", str(launchers[0])]).returncode == 0
    assert os.access(launchers[0], os.X_OK)
    readme = (folder / "README.md").read_text()
    for needle in ("/etc/resqmp/profiles/", "resqmp profiles validate", "resqmp profiles render"):
        assert needle in readme
    p = profiles.load(str(folder / f"{backend}.yaml"))
    assert p.backend == backend and p.chain[0].name == f"{backend}.yaml" and p.chain[0].parent.name == "profiles"


def test_validate_rejects_a_broken_site_profile(tmp_path):
    bad = tmp_path / "slurm.yaml"
    bad.write_text("extends: slurm\ncluster:\n  partition: compute\n")
    proc = run_resqmp("profiles", "validate", bad)
    assert proc.returncode == ExitCode.PROFILE
    assert "cluster.partition" in proc.stderr
