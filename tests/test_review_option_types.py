"""The list and mapping options of the batch-scheduler backends, from every layer (profile, --set,
the site's dask file, DASK_* variables), are what they say or one clear error.

dask-jobqueue iterates `job_extra_directives` and `job_directives_skip` as lists. Given one string
(`DASK_JOBQUEUE__SLURM__JOB_DIRECTIVES_SKIP=--mem`, `--set cluster.job_extra_directives=--qos=long`,
the form resqmp takes for worker_extra_args and job_script_prologue) it took each character: a
skip of "--mem" dropped every directive holding a `-`, `m` or `e` (the job name, walltime, queue,
account and log files all gone, silently), and a directive "--qos=long" became eight directives
`#SBATCH -`, `#SBATCH q`, ... Other types gave an internal error (scheduler_options: 5, exit 1),
dask-jobqueue's words without the key ("'int' object is not iterable"), or blamed the wrong layer
("resqmp default: cluster.worker_extra_args")."""
from __future__ import annotations

import textwrap

import pytest

from conftest import one_error_line, run_resqmp

DIRECTIVE = {"slurm": "#SBATCH", "sge": "#$", "pbs": "#PBS", "lsf": "#BSUB"}
MEMORY = {"slurm": "--mem", "sge": "-l h_vmem", "pbs": "-l select", "lsf": "-M"}


def render(backend, *sets, env=None, check=0):
    args = [a for s in sets for a in ("--set", s)]
    return run_resqmp("profiles", "render", backend, *args, env=env, check=check)


def directives(script: str, backend: str) -> list[str]:
    return [ln for ln in script.splitlines() if ln.startswith(DIRECTIVE[backend] + " ")]


@pytest.mark.parametrize("backend", ["slurm", "pbs", "lsf"])
def test_one_directive_given_as_text_is_one_directive(backend):
    script = render(backend, "cluster.job_extra_directives=--site-directive").stdout
    mine = [ln for ln in directives(script, backend) if "site" in ln or len(ln.split()) == 2 and len(ln.split()[1]) == 1]
    assert mine == [f"{DIRECTIVE[backend]} --site-directive"], script


def test_one_directive_from_a_dask_variable_is_one_directive():
    env = {"DASK_JOBQUEUE__SLURM__JOB_EXTRA_DIRECTIVES": "--qos=long"}
    script = render("slurm", env=env).stdout
    assert "#SBATCH --qos=long" in script.splitlines(), script
    assert not [ln for ln in directives(script, "slurm") if len(ln) <= len("#SBATCH x")], script


@pytest.mark.parametrize("backend", ["slurm", "pbs", "lsf"])
def test_one_skip_given_as_text_skips_that_directive_only(backend):
    whole = directives(render(backend).stdout, backend)
    skip = MEMORY[backend]
    script = render(backend, f"cluster.job_directives_skip={skip}").stdout
    assert directives(script, backend) == [ln for ln in whole if skip not in ln], script


def test_one_skip_from_a_dask_variable_skips_that_directive_only():
    whole = directives(render("slurm").stdout, "slurm")
    script = render("slurm", env={"DASK_JOBQUEUE__SLURM__JOB_DIRECTIVES_SKIP": "--mem"}).stdout
    assert directives(script, "slurm") == [ln for ln in whole if "--mem" not in ln], script
    assert "#SBATCH -t 01:00:00" in script.splitlines()


@pytest.mark.parametrize("item, says", [
    ("cluster.scheduler_options=5", "cluster.scheduler_options 5: expected a mapping"),
    ("cluster.job_extra_directives={a: 1}", "cluster.job_extra_directives {'a': 1}: expected a list"),
    ("cluster.job_directives_skip=5", "cluster.job_directives_skip 5: expected a list"),
    ("cluster.job_script_prologue=[[module, load]]", "cluster.job_script_prologue [['module', 'load']]: expected a list"),
    ("cluster.worker_extra_args=[--resources, {GPU: 1}]", "cluster.worker_extra_args"),
])
def test_a_wrong_type_on_the_command_line_is_one_error_naming_it(item, says):
    line = one_error_line(render("slurm", item, check=None), 4)
    assert line.startswith(f"resqmp: error: --set {item!r}: "), line
    assert says in line, line


def test_a_wrong_type_from_a_dask_variable_names_the_variable_not_a_default():
    env = {"DASK_JOBQUEUE__SLURM__WORKER_EXTRA_ARGS": "7"}
    line = one_error_line(render("slurm", env=env, check=None), 4)
    assert "DASK_JOBQUEUE__SLURM__WORKER_EXTRA_ARGS" in line and "cluster.worker_extra_args 7" in line, line
    assert "resqmp default" not in line, line


def test_a_wrong_type_in_the_sites_dask_file_names_the_file(tmp_path):
    (tmp_path / "jobqueue.yaml").write_text(textwrap.dedent("""\
        jobqueue:
          slurm:
            scheduler-options: 5
        """))
    for command in ("render", "validate"):
        proc = run_resqmp("profiles", command, "slurm", env={"DASK_CONFIG": str(tmp_path)})
        assert proc.returncode == 4, proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
        assert f"{tmp_path}/jobqueue.yaml" in proc.stderr + proc.stdout, proc.stderr
        assert "cluster.scheduler_options 5: expected a mapping" in proc.stderr + proc.stdout, proc.stderr
