"""SGE runs a job script with the queue's shell when the queue is in posix_compliant mode (many
sites: csh), ignoring the script's #! line. resqmp's worker job scripts are bash, so they name
their shell with -S; a site that names another one keeps its own."""
from __future__ import annotations

from test_hpc_render import render


def directives(script: str) -> list[str]:
    return [line[3:].strip() for line in script.splitlines() if line.startswith("#$ ")]


def test_the_worker_job_names_bash_as_its_shell():
    assert directives(render("sge")).count("-S /bin/bash") == 1


def test_a_sites_own_shell_directive_is_kept_alone():
    found = directives(render("sge", "cluster.job_extra_directives=[-S /bin/zsh, -l exclusive=false]"))
    assert [d for d in found if d.startswith("-S")] == ["-S /bin/zsh"]
    assert "-l exclusive=false" in found
