"""A site's dask config written in dask-jobqueue's own layout lists every key, most of them `null`
("not set": dask-jobqueue then falls back to its own default). resqmp's floor must read such a
null as "not set" too, so resqmp's defaults (one core, 4GiB, node-local scratch) still lie under
it; a null must not erase them (dask-jobqueue then refused the options: "You must specify how much
cores and memory per job you want to use", two lines, and every packaged HPC profile was unusable
on such a site).

A real DASK_CONFIG folder, read by the real `resqmp` command (dask reads its config at import)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import run_resqmp

# the generic part of dask-jobqueue 0.9's jobqueue.yaml section, as a site copies and edits it
TEMPLATE = """\
    jobqueue:
      {s}:
        name: dask-worker
        cores: null
        memory: null
        processes: null
        python: null
        interface: null
        death-timeout: 60
        local-directory: null
        shared-temp-directory: null
        extra: null
        worker-command: "distributed.cli.dask_worker"
        worker-extra-args: []
        shebang: "#!/usr/bin/env bash"
        queue: null
        account: null
        project: null
        walltime: '{walltime}'
        env-extra: null
        job-script-prologue: []
        job-extra: null
        job-extra-directives: []
        job-directives-skip: []
        log-directory: null
        scheduler-options: {{}}
"""


def site(folder: Path, text: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "jobqueue.yaml").write_text(textwrap.dedent(text))
    return {"DASK_CONFIG": str(folder)}


def worker_line(script: str) -> str:
    (line,) = [ln for ln in script.splitlines() if "distributed.cli.dask_worker" in ln]
    return line


@pytest.mark.parametrize("scheduler", ["slurm", "sge", "pbs", "lsf"])
def test_nulls_in_the_sites_dask_jobqueue_file_leave_resqmps_defaults(scheduler, tmp_path):
    walltime = "00:30" if scheduler == "lsf" else "00:30:00"
    env = site(tmp_path / "dask", TEMPLATE.format(s=scheduler, walltime=walltime))
    proc = run_resqmp("profiles", "render", scheduler, env=env)
    assert proc.returncode == 0, proc.stderr
    cmd = worker_line(proc.stdout)
    # null cores/memory/processes/local-directory: resqmp's defaults
    assert "--nthreads 1 --memory-limit 4.00GiB" in cmd, cmd
    assert "--nworkers" not in cmd, cmd
    assert '--local-directory "${TMPDIR:-/tmp}"' in cmd, cmd         # one word, expanded by the job's shell
    # the values the site did set: its own
    assert "--death-timeout 60" in cmd, cmd
    assert "dask-worker" in proc.stdout.split(cmd)[0], proc.stdout          # the job name
    assert "--lifetime 1530s --lifetime-stagger 90s" in cmd, cmd          # from the site's 30 min


def test_show_names_resqmp_default_for_what_the_site_left_null(tmp_path):
    env = site(tmp_path / "dask", TEMPLATE.format(s="slurm", walltime="00:30:00"))
    out = run_resqmp("profiles", "show", "slurm", env=env, check=0).stdout
    lines = {ln.split(":", 1)[0].strip(): ln for ln in out.splitlines() if ln.startswith("  ")}
    assert lines["cores"].startswith("  cores: 1  # resqmp default"), out
    assert lines["memory"].startswith("  memory: 4GiB  # resqmp default"), out
    assert "dask config jobqueue.slurm.death-timeout" in lines["death_timeout"], out
    assert "account" not in lines and "queue" not in lines, out


@pytest.mark.parametrize("new", ["null", "[]"])
def test_an_unset_new_name_falls_back_to_the_deprecated_one_as_dask_jobqueue_does(new, tmp_path):
    # an older site file: the prologue under env-extra, the new name present but null or empty
    env = site(tmp_path / "dask", f"""\
        jobqueue:
          slurm:
            job-script-prologue: {new}
            env-extra: ["module load site-python/3.11"]
        """)
    script = run_resqmp("profiles", "render", "slurm", env=env, check=0).stdout
    assert "module load site-python/3.11" in script.splitlines(), script
