"""The site's dask config is the floor under resqmp's profiles (issue 10).

A real jobqueue.yaml / kubernetes.yaml in a temporary DASK_CONFIG folder, read by the `resqmp`
command (a subprocess: dask reads its config when it is imported). Precedence, highest first:
--set > profile files > the site's dask config > resqmp's defaults; lists: resqmp's own lines are
added to the site's. The last test submits real SLURM jobs built from the site's config."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from conftest import run_resqmp
from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from hpc_fixtures import PROFILES

DIRECTIVE = {"slurm": "#SBATCH", "sge": "#$", "pbs": "#PBS", "lsf": "#BSUB"}
QUEUE = {"slurm": "#SBATCH -p {}", "sge": "#$ -q {}", "pbs": "#PBS -q {}", "lsf": "#BSUB -q {}"}


def site_config(folder: Path, text: str, name: str = "jobqueue.yaml") -> dict:
    """A dask config folder holding `text`; the env that makes the resqmp command read it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return {"DASK_CONFIG": str(folder)}


def resqmp(*args, env, check=0):
    return run_resqmp(*args, env=env, check=check)


def worker_line(script: str) -> str:
    (line,) = [ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln]
    return line


SITE = """\
    jobqueue:
      {s}:
        queue: site-queue
        cores: 2
        memory: 3GiB
        walltime: "02:00:00"
        local-directory: /site/scratch
        job-script-prologue:
          - module load site-python/3.11
          - source /site/venv/bin/activate
        job-extra-directives: ["--site-directive"]
        worker-extra-args: ["--site-worker-arg", "7"]
"""


@pytest.mark.parametrize("scheduler", ["slurm", "sge", "pbs", "lsf"])
def test_rendered_script_has_the_sites_queue_prologue_directives_and_sizes(scheduler, tmp_path):
    env = site_config(tmp_path / "dask", SITE.format(s=scheduler).replace(
        '"02:00:00"', '"02:00"' if scheduler == "lsf" else '"02:00:00"'))
    script = resqmp("profiles", "render", scheduler, env=env).stdout
    lines = script.splitlines()
    assert QUEUE[scheduler].format("site-queue") in lines, script
    assert f"{DIRECTIVE[scheduler]} --site-directive" in lines, script
    # resqmp's worker environment first, then the site's prologue lines, in the site's order
    exports = max(i for i, ln in enumerate(lines) if ln.startswith("export "))
    module, venv = lines.index("module load site-python/3.11"), lines.index("source /site/venv/bin/activate")
    assert exports < module < venv < lines.index(worker_line(script))
    cmd = worker_line(script)
    # the site's worker arguments, and resqmp's own added after them
    assert "--site-worker-arg 7" in cmd and "--preload resqmp.worker_preload" in cmd
    assert "--lifetime 6300s --lifetime-stagger 300s" in cmd             # from the site's 2 h walltime
    assert "--local-directory /site/scratch" in cmd
    # cores 2 from the site; processes = cores is resqmp's default under it
    assert "--nworkers 2" in cmd and "--nthreads 1" in cmd and "--memory-limit 1.50GiB" in cmd


def test_precedence_set_over_profile_over_site_over_defaults_and_show_says_where(tmp_path):
    env = site_config(tmp_path / "dask", """\
        jobqueue:
          slurm:
            queue: site-queue
            account: site-account
            memory: 3GiB
            job-extra-directives: ["--site-directive"]
        """)
    profile = tmp_path / "mine.yaml"
    profile.write_text("extends: slurm\ncluster:\n  queue: profile-queue\n  memory: 2GiB\n")
    script = resqmp("profiles", "render", profile, "--set", "cluster.memory=5GiB", env=env).stdout
    assert "#SBATCH -p profile-queue" in script            # profile over the site
    assert "#SBATCH -A site-account" in script             # the site's, where no profile sets it
    assert "#SBATCH --mem=5G" in script                    # --set over both
    assert "#SBATCH -t 01:00:00" in script                 # resqmp's default, where nobody sets it
    shown = resqmp("profiles", "show", profile, "--set", "cluster.memory=5GiB", env=env).stdout
    site_file = tmp_path / "dask" / "jobqueue.yaml"
    assert f"  account: site-account  # dask config jobqueue.slurm.account ({site_file})" in shown
    assert f"  queue: profile-queue  # profile {profile}" in shown
    assert "  memory: 5GiB  # --set 'cluster.memory=5GiB'" in shown
    assert "  walltime: 01:00:00  # resqmp default" in shown
    assert f"  job_extra_directives: [--site-directive]  # dask config jobqueue.slurm.job-extra-directives ({site_file})" \
        in shown
    # a profile's null is "not set here": the site's value shows through
    shown = resqmp("profiles", "show", "slurm", "--set", "cluster.queue=null", env=env).stdout
    assert f"  queue: site-queue  # dask config jobqueue.slurm.queue ({site_file})" in shown


def test_environment_variables_win_over_files_as_in_dask(tmp_path):
    env = site_config(tmp_path / "dask", "jobqueue:\n  slurm:\n    queue: file-queue\n    name: site-job\n")
    env["DASK_JOBQUEUE__SLURM__QUEUE"] = "env-queue"
    script = resqmp("profiles", "render", "slurm", env=env).stdout
    assert "#SBATCH -p env-queue" in script and "#SBATCH -J site-job" in script   # `name` is job_name
    shown = resqmp("profiles", "show", "slurm", env=env).stdout
    assert "  queue: env-queue  # dask config jobqueue.slurm.queue (DASK_JOBQUEUE__SLURM__QUEUE)" in shown


def test_an_unquoted_walltime_in_the_sites_file_is_the_time_written_and_the_site_is_told(tmp_path):
    """dask reads its YAML as 1.1: `walltime: 2:00:00` is 7200 there (7200 minutes for sbatch).
    resqmp reads the time written, and warns that dask-jobqueue alone would not."""
    env = site_config(tmp_path / "dask", "jobqueue:\n  slurm:\n    walltime: 2:00:00\n")
    proc = resqmp("profiles", "render", "slurm", env=env)
    assert "#SBATCH -t 2:00:00" in proc.stdout.splitlines()
    assert "--lifetime 6300s --lifetime-stagger 300s" in worker_line(proc.stdout)
    (warning,) = [ln for ln in proc.stderr.splitlines() if "walltime" in ln]
    assert warning.startswith("resqmp: warning: dask config jobqueue.slurm.walltime in ")
    assert str(tmp_path / "dask" / "jobqueue.yaml") in warning and "7200" in warning and "quote it" in warning
    # the same number written as a number is one: minutes for SLURM, as sbatch reads it
    env = site_config(tmp_path / "dask2", "jobqueue:\n  slurm:\n    walltime: 90\n")
    proc = resqmp("profiles", "render", "slurm", env=env)
    assert "#SBATCH -t 90" in proc.stdout.splitlines() and "walltime" not in proc.stderr
    assert "--lifetime 4590s --lifetime-stagger 270s" in worker_line(proc.stdout)


def test_a_walltime_from_the_site_the_scheduler_does_not_take_names_the_site_file(tmp_path):
    env = site_config(tmp_path / "dask", "jobqueue:\n  sge:\n    walltime: '1:30'\n")
    proc = resqmp("profiles", "render", "sge", env=env, check=4)
    assert proc.stderr.count("\n") == 1 and "dask config jobqueue.sge.walltime" in proc.stderr
    assert "not a sge walltime" in proc.stderr


def test_sge_start_directory_is_added_to_the_sites_directives(tmp_path):
    env = site_config(tmp_path / "dask", 'jobqueue:\n  sge:\n    job-extra-directives: ["-pe smp 1"]\n')
    lines = resqmp("profiles", "render", "sge", env=env).stdout.splitlines()
    assert "#$ -pe smp 1" in lines and any(ln.startswith("#$ -wd ") for ln in lines) and "#$ -cwd" not in lines


def test_kubernetes_takes_the_operators_config(tmp_path):
    env = site_config(tmp_path / "dask", """\
        kubernetes:
          namespace: site-ns
          image: registry.site/resqmp:1.2
          resources: {limits: {memory: 8Gi}}
        """, name="kubernetes.yaml")
    import yaml
    manifest = yaml.safe_load(resqmp("profiles", "render", "kubernetes", env=env).stdout.split("---\n", 1)[1])
    assert manifest["metadata"]["namespace"] == "site-ns"
    (worker,) = manifest["spec"]["worker"]["spec"]["containers"]
    assert worker["image"] == "registry.site/resqmp:1.2"
    # mappings merge: the site's memory limit over resqmp's default requests and cpu limit
    assert worker["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "8Gi"}}


def test_external_takes_dasks_scheduler_address(tmp_path):
    import yaml
    env = {"DASK_SCHEDULER_ADDRESS": "tcp://site-scheduler:8786"}
    out = yaml.safe_load(resqmp("profiles", "render", "external", env=env).stdout)
    assert out["scheduler address"] == "tcp://site-scheduler:8786"
    shown = resqmp("profiles", "show", "external", env=env).stdout
    assert "address: tcp://site-scheduler:8786  # dask config scheduler-address (DASK_SCHEDULER_ADDRESS)" in shown


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_a_slurm_launch_uses_the_sites_dask_config(slurm, hpc_example, hpc_workdir, local_reference, tmp_path):
    """Real jobs from the site's config: partition, job name, a comment directive (scontrol shows
    it), a prologue line that runs on the node (its marker file), an unquoted walltime that YAML 1.1
    reads as 1200 (`20:00`; `0:20:00` it leaves as text: base 60 needs a leading 1-9)."""
    tag = unique("site")
    markers = hpc_workdir / f"markers-{tag}"
    markers.mkdir()
    env = site_config(tmp_path / "dask", f"""\
        jobqueue:
          slurm:
            queue: debug
            name: {tag}
            cores: 1
            memory: 1GiB
            walltime: 20:00
            death-timeout: 60
            job-extra-directives: ["--comment=site-{tag}"]
            job-script-prologue: ["echo prologue-ran > {markers}/$SLURM_JOB_ID"]
        """)
    profile = hpc_workdir / f"{tag}.yaml"
    profile.write_text(textwrap.dedent(f"""\
        extends: slurm
        scaling: {{workers: 2, worker_timeout: 120}}
        storage: {{shared_directory: {SHARED}}}
        """))
    out = hpc_workdir / tag / "faults.epc"
    out.parent.mkdir()
    proc = launch(profile, hpc_example["batch"], out, env=env, check=0)
    assert "dask config jobqueue.slurm.walltime" in proc.stderr            # told about the unquoted time
    assert_same_model(out, local_reference)
    jobs = {}
    for line in sh("scontrol", "show", "job", "-o").stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("JobName") == tag:
            jobs[fields["JobId"]] = fields
    assert jobs, sh("scontrol", "show", "job", "-o").stdout
    for job, fields in jobs.items():
        assert fields["Partition"] == "debug" and fields["Comment"] == f"site-{tag}"
        assert fields["TimeLimit"] == "00:20:00"
        assert (markers / job).read_text().strip() == "prologue-ran"
    assert {t["worker"] for t in report_of(out)["tasks"]}
    assert not re.search(r"Traceback", proc.stderr)
