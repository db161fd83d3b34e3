"""The real sbatch and qsub as parsers of job scripts, with no SLURM or Grid Engine running: sbatch
-vvv lists the options it read from the script's directives before it needs a controller, and
qsub -verify prints the job it would submit without a qmaster. Both are pointed at a controller
that does not exist (port 1 on localhost), so nothing is submitted anywhere and the machine's
running schedulers, if any, are not asked. Measured with Debian 12's slurm-wlm 22.05 and
gridengine 8.1.9."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SGE_COMMON = "/var/lib/gridengine/default/common"
needs_sbatch = pytest.mark.skipif(not shutil.which("sbatch"), reason="sbatch not installed")
needs_qsub = pytest.mark.skipif(not (shutil.which("qsub") and Path(SGE_COMMON).is_dir()), reason="SGE qsub not installed")


def sbatch_reads(script: str, tmp_path: Path) -> dict[str, str]:
    """What the real sbatch reads from `script`'s directives (its -vvv listing), with a controller
    that does not exist: nothing is submitted, no SLURM needs to run. {"refused": message} when it
    refuses the script (an unquoted space in a directive: "Invalid directive found in batch script")."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=parse\nSlurmctldHost=localhost\nSlurmctldPort=1\n"
                    "MessageTimeout=1\nTCPTimeout=1\nNodeName=localhost CPUs=1 State=UNKNOWN\n"
                    "PartitionName=p Nodes=localhost Default=YES\n")
    path = tmp_path / "job.sh"
    path.write_text(script)
    proc = subprocess.run(["sbatch", "-vvv", str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SLURM_CONF": str(conf)})
    if "Invalid directive" in proc.stderr:
        return {"refused": proc.stderr.strip().splitlines()[-1]}
    seen = dict(re.findall(r"^sbatch: (\w+)\s+: (.*)$", proc.stderr, re.M))
    assert "end of defined options" in proc.stderr, proc.stderr
    return seen


def qsub_reads(script: str, tmp_path: Path) -> str:
    """What the real qsub reads from `script` (qsub -verify: the job as it would be submitted),
    with a qmaster that does not exist."""
    root = tmp_path / "sge"
    shutil.copytree(SGE_COMMON, root / "default" / "common", dirs_exist_ok=True)
    (root / "default" / "common" / "act_qmaster").write_text("localhost\n")
    path = tmp_path / "job.sh"
    path.write_text(script)
    proc = subprocess.run(["qsub", "-verify", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "SGE_ROOT": str(root), "SGE_CELL": "default", "SGE_QMASTER_PORT": "1"})
    return proc.stdout + proc.stderr
