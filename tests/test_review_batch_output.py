"""`resqmp batch ... -o BATCH.yaml` never writes over a file the batch reads: the grid's or the
surfaces' EPC, or their .h5. A typo such as `-o model.epc` used to be refused with "exists (use
--force to replace it)", and with --force the user's model was replaced by the batch's YAML (the
batch then named itself as its grid EPC). Like `launch`'s OUT rules: an input is refused whatever
the flags, exit 6, one line naming it."""
from __future__ import annotations

import hashlib
import os

import pytest

from conftest import one_error_line, run_resqmp
from resqmp.errors import ExitCode


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("target", ["model.epc", "model.h5", "link.epc", "hard.epc"])
@pytest.mark.parametrize("force", [False, True])
def test_batch_output_never_replaces_an_input(work, target, force):
    epc = work / "model.epc"
    os.symlink(epc, work / "link.epc")        # the same model under another name
    os.link(epc, work / "hard.epc")
    before = _digests(work)
    out = work / target
    proc = run_resqmp("batch", "faces", "--grid", epc, "--surfaces", epc, "-o", out, *(["--force"] if force else []))
    line = one_error_line(proc, ExitCode.OUTPUT)
    assert str(out) in line and "input" in line and "--force" not in line.replace("not even with --force", ""), line
    assert _digests(work) == before                    # the model, its .h5 and every batch untouched
    assert not [p for p in os.listdir(work) if p.endswith(".tmp")]


def test_batch_output_beside_the_model_still_written(work):
    epc = work / "model.epc"
    out = work / "faces.yaml"
    run_resqmp("batch", "faces", "--grid", epc, "--surfaces", epc, "-o", out, check=0)
    run_resqmp("batch", "faces", "--grid", epc, "--surfaces", epc, "-o", out, "--force", check=0)
    assert "model.epc" in out.read_text()
