"""A launcher killed (SIGKILL, its node lost) while it puts the recombined model in place.

The publish moves the model at OUT (EPC, then .h5) into its staging folder's `replaced/`, then the
new .h5 and the new EPC into place. Killed between two of those renames, it left OUT missing (or
OUT's new .h5 beside no EPC), the old model hidden in `.STEM.staging-XXXXXXXX/replaced/`, and no
launch ever put it back or said where it was; a publish killed once complete left that folder
forever. The next launch on OUT (holding OUT's journal) puts the replaced model back, or, once the
new one is in place, removes the one it replaced, each with one warning line; when it cannot tell,
it keeps the folder and says where it is and what to do.

The states are made by the real launcher: a runner (test code) installs an audit hook that SIGKILLs
its own process just before the publish's Nth rename, or as the staging folder of a completed
publish starts to be removed. Deterministic, no timing."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest
import yaml

from conftest import ALLOW_TEST_WRAPPERS, BIN, TESTS, one_error_line, run_resqmp
from epc_compare import content
from resqmp.errors import ExitCode

RUNNER = r'''
import os, signal, sys

def main():
    at = os.environ["RESQMP_TEST_KILL_AT"]    # "rename:N": just before the publish's Nth rename; "published"
    out = os.environ["RESQMP_TEST_OUT"]
    folder = os.path.dirname(out)
    stem = os.path.splitext(os.path.basename(out))[0]
    staging = os.path.join(folder, "." + stem + ".staging-")
    renames = []

    def publishing(src, dst):
        # OUT's files into the staging folder's replaced/, the new model from the staging folder to OUT's
        # folder (preflight's probe renames inside a staging folder: neither)
        src, dst = os.fspath(src), os.fspath(dst)
        return (os.path.basename(os.path.dirname(dst)) == "replaced"
                or (src.startswith(staging) and os.path.dirname(dst) == folder))

    def hook(event, args):
        if event == "os.rename" and publishing(args[0], args[1]):
            renames.append(args[:2])
            if at == "rename:%d" % len(renames):
                os.kill(os.getpid(), signal.SIGKILL)
        elif (event == "shutil.rmtree" and at == "published" and len(renames) == 4
              and os.fspath(args[0]).startswith(staging)):
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)
    from resqmp.cli import console_main
    sys.argv = ["resqmp", *sys.argv[1:]]
    console_main()

if __name__ == "__main__":
    main()
'''


def launch(batch, out, *extra, **kwargs):
    return run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, *extra, **kwargs)


def killed_launch(tmp_path, batch, out, at: str) -> subprocess.CompletedProcess:
    """`resqmp launch` SIGKILLed at `at` (RUNNER); asserts that it was."""
    runner = tmp_path / "kill_mid_publish.py"
    runner.write_text(RUNNER)
    env = {**os.environ, "RESQMP_TEST_KILL_AT": at, "RESQMP_TEST_OUT": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([str(BIN / "python"), str(runner), "launch", "--profile", "local", "--batch", str(batch),
                           "--output", str(out), *ALLOW_TEST_WRAPPERS], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == -9, f"exit {proc.returncode}, expected SIGKILL\n{proc.stderr}"
    return proc


def digest(*paths) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


def stagings(out):
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(f".{out.stem}.staging-"))


def warnings(proc) -> list[str]:
    """resqmp's warnings (not distributed's, which a loaded machine may add)."""
    return [ln for ln in proc.stderr.splitlines() if re.search(r"\bWARNING resqmp\b|^resqmp: warning:", ln)]


def faces(epc) -> list[str]:
    return sorted(content(epc)["faces"])


def batches(work):
    """old: the first two tasks of the example's find-faces batch; new: all four."""
    data = yaml.safe_load((work / "batch.yaml").read_text())
    old = dict(data, tasks=data["tasks"][:2])
    (work / "old.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    return work / "old.yaml", work / "batch.yaml"


def other_batch(work):
    """A batch that is not the killed run's: the resumed journal refuses it (exit 5), after the
    launch has put OUT back."""
    data = yaml.safe_load((work / "batch.yaml").read_text())
    (work / "other.yaml").write_text(yaml.safe_dump(dict(data, tasks=data["tasks"][:3]), sort_keys=False))
    return work / "other.yaml"


OLD, NEW = ["fault 1", "fault 2"], ["fault 1", "fault 2", "fault 3", "fault 4"]

# after N renames of the publish: what is at OUT's names, what is in replaced/
STATES = {
    1: dict(out=False, h5="old", replaced={"faults.epc"}),
    2: dict(out=False, h5=None, replaced={"faults.epc", "faults.h5"}),
    3: dict(out=False, h5="new", replaced={"faults.epc", "faults.h5"}),
}


@pytest.mark.parametrize("renames", sorted(STATES))
def test_a_publish_killed_between_its_renames_is_put_back_by_the_next_launch(work, tmp_path, renames):
    old_batch, new_batch = batches(work)
    out, h5 = tmp_path / "faults.epc", tmp_path / "faults.h5"
    launch(old_batch, out, check=0)
    before = digest(out, h5)
    killed_launch(tmp_path, new_batch, out, f"rename:{renames + 1}")
    # the state the kill left (what a user found: OUT gone)
    state = STATES[renames]
    [staging] = stagings(out)
    assert out.exists() == state["out"]
    assert {p.name for p in (staging / "replaced").iterdir()} == state["replaced"]
    if state["h5"] == "old":
        assert digest(h5)["faults.h5"] == before["faults.h5"]
    elif state["h5"] == "new":
        assert digest(h5)["faults.h5"] not in (None, before["faults.h5"])
    else:
        assert not h5.exists()
    assert (tmp_path / "faults.journal.jsonl").exists()       # nothing of the killed run is lost

    # the next launch on OUT puts the old model back, byte for byte, and says so in one line, even
    # one refused once OUT's journal is read (here: another batch than the journal's)
    proc = launch(other_batch(work), out)
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    assert digest(out, h5) == before
    [line] = warnings(proc)
    assert "restored" in line and str(out) in line and str(staging / "replaced") in line, line
    assert not stagings(out)       # its unfinished model goes: the journal still holds every task
    # the same command resumes the killed run: every task journaled, OUT replaced as by any run
    proc = launch(new_batch, out, check=0)
    assert not warnings(proc), proc.stderr
    assert "4 succeeded, 0 failed, 4 resumed" in proc.stdout, proc.stdout
    assert faces(out) == NEW
    assert not stagings(out) and not (tmp_path / "faults.journal.jsonl").exists()


def test_a_publish_killed_before_its_first_rename_leaves_out_as_it_was(work, tmp_path):
    old_batch, new_batch = batches(work)
    out, h5 = tmp_path / "faults.epc", tmp_path / "faults.h5"
    launch(old_batch, out, check=0)
    before = digest(out, h5)
    killed_launch(tmp_path, new_batch, out, "rename:1")
    [staging] = stagings(out)
    assert (staging / "replaced").is_dir() and not any((staging / "replaced").iterdir())
    assert digest(out, h5) == before
    proc = launch(new_batch, out, check=0)
    assert not warnings(proc), proc.stderr            # nothing of the user's was moved: nothing to say
    assert faces(out) == NEW and not stagings(out)


def test_a_publish_killed_once_complete_has_its_replaced_model_removed_with_one_line(work, tmp_path):
    old_batch, new_batch = batches(work)
    out, h5 = tmp_path / "faults.epc", tmp_path / "faults.h5"
    launch(old_batch, out, check=0)
    killed_launch(tmp_path, new_batch, out, "published")
    [staging] = stagings(out)
    assert faces(out) == NEW and (staging / "replaced" / "faults.epc").exists()
    assert (tmp_path / "faults.journal.jsonl").exists()     # killed before its report and journal
    proc = launch(new_batch, out, check=0)
    [line] = warnings(proc)
    assert "removed" in line and str(staging) in line and str(out) in line, line
    assert "4 succeeded, 0 failed, 4 resumed" in proc.stdout, proc.stdout
    assert faces(out) == NEW and not stagings(out)
    assert not (tmp_path / "faults.journal.jsonl").exists()


def test_something_put_at_out_after_the_kill_keeps_the_replaced_model_and_says_where(work, tmp_path):
    old_batch, new_batch = batches(work)
    out, h5 = tmp_path / "faults.epc", tmp_path / "faults.h5"
    launch(old_batch, out, check=0)
    before = digest(out, h5)
    killed_launch(tmp_path, new_batch, out, "rename:3")
    [staging] = stagings(out)
    out.write_bytes(b"the user's own file")          # OUT is there again: not resqmp's to judge
    proc = launch(other_batch(work), out)
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    assert out.read_bytes() == b"the user's own file"
    [line] = warnings(proc)
    assert str(staging / "replaced") in line and "kept" in line, line
    replaced = staging / "replaced"
    assert digest(replaced / "faults.epc", replaced / "faults.h5") == before      # nothing deleted


def test_an_interrupted_first_publish_leaves_no_h5_at_out_without_its_epc(work, tmp_path):
    """No model at OUT before, no report: the new .h5 moved in alone is resqmp's, not the user's.
    The next launch takes it back out instead of refusing it as a file resqmp did not write."""
    _, new_batch = batches(work)
    out, h5 = tmp_path / "faults.epc", tmp_path / "faults.h5"
    killed_launch(tmp_path, new_batch, out, "rename:2")      # the new .h5 in place, no EPC
    assert h5.exists() and not out.exists()
    proc = launch(new_batch, out, check=0)
    assert faces(out) == NEW and not stagings(out)


def test_an_interrupted_publish_of_the_partial_model_puts_the_old_partial_back(work, tmp_path):
    """A run with a failed task writes beside a kept OUT (STEM.partial.epc): the same recovery."""
    old_batch, _ = batches(work)
    out = tmp_path / "faults.epc"
    partial, partial_h5 = tmp_path / "faults.partial.epc", tmp_path / "faults.partial.h5"
    launch(old_batch, out, check=0)
    kept = digest(out, out.with_suffix(".h5"))
    data = yaml.safe_load((work / "batch.yaml").read_text())
    data["tasks"][1]["surface_uuid"] = data["defaults"]["grid_uuid"]     # a grid is not a surface: it fails
    failing = work / "failing.yaml"
    failing.write_text(yaml.safe_dump(data, sort_keys=False))
    assert launch(failing, out).returncode == ExitCode.TASKS_FAILED
    before = digest(partial, partial_h5)
    killed_launch(tmp_path, failing, out, "rename:4")     # the same command again, killed mid-publish
    assert not partial.exists() and partial_h5.exists()
    proc = launch(other_batch(work), out)
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    assert digest(partial, partial_h5) == before and digest(out, out.with_suffix(".h5")) == kept
    [line] = warnings(proc)
    assert "restored" in line and str(partial) in line, line
    proc = launch(failing, out)
    assert proc.returncode == ExitCode.TASKS_FAILED, proc.stderr
    assert not stagings(out) and digest(out, out.with_suffix(".h5")) == kept


def test_a_folder_an_earlier_resqmp_left_without_its_plan_is_recovered_when_its_state_tells(work, tmp_path):
    """A staging folder from before resqmp wrote PUBLISHING (an upgrade after the kill): the names
    in it tell the same, unless they cannot (then nothing moves: the folder is kept and said)."""
    old_batch, new_batch = batches(work)
    out, h5 = tmp_path / "faults.epc", tmp_path / "faults.h5"
    launch(old_batch, out, check=0)
    before = digest(out, h5)
    killed_launch(tmp_path, new_batch, out, "rename:4")      # old EPC and .h5 aside, the new .h5 in place
    [staging] = stagings(out)
    (staging / "publishing.json").unlink(missing_ok=True)     # none on an earlier resqmp
    proc = launch(other_batch(work), out)
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    assert digest(out, h5) == before and not stagings(out)
    [line] = warnings(proc)
    assert "restored" in line and "taken back out" in line, line


def test_a_state_that_cannot_be_told_keeps_everything_and_says_where(work, tmp_path):
    """Without PUBLISHING, an .h5 at OUT's name beside a missing EPC, the old .h5 not in replaced/ and
    no new one in the folder: the old model's .h5 (killed after its first rename, a model without
    arrays) or the new one (no old .h5, killed after the new one moved in). Nothing is moved."""
    old_batch, new_batch = batches(work)
    out, h5 = tmp_path / "faults.epc", tmp_path / "faults.h5"
    launch(old_batch, out, check=0)
    before = digest(out, h5)
    killed_launch(tmp_path, new_batch, out, "rename:2")      # the old EPC aside, its .h5 in place
    [staging] = stagings(out)
    (staging / "publishing.json").unlink(missing_ok=True)     # none on an earlier resqmp
    (staging / "faults.h5").unlink()                         # as if the new model had no .h5
    for _ in range(2):                                       # each launch says it, none moves anything
        proc = launch(other_batch(work), out)
        assert proc.returncode == ExitCode.BATCH, proc.stderr
        [line] = warnings(proc)
        assert "kept" in line and str(staging / "replaced") in line and str(h5) in line, line
    assert not out.exists() and digest(h5)["faults.h5"] == before["faults.h5"]
    assert digest(staging / "replaced" / "faults.epc")["faults.epc"] == before["faults.epc"]


def test_commands_reading_a_model_a_killed_publish_moved_aside_say_where_it_is(work, tmp_path):
    """`resqmp batch` from OUT, or a launch whose batch reads OUT, while OUT is still aside: the
    'not found' error names the folder holding it and the launch that puts it back. Neither moves
    it: they do not hold OUT's journal."""
    old_batch, new_batch = batches(work)
    out = tmp_path / "faults.epc"
    launch(old_batch, out, check=0)
    killed_launch(tmp_path, new_batch, out, "rename:3")
    [staging] = stagings(out)
    proc = run_resqmp("batch", "faces", "--grid", out, "--surfaces", out, "-o", tmp_path / "next.yaml")
    line = one_error_line(proc, ExitCode.BATCH)
    assert "not found" in line and str(staging / "replaced") in line and f"--output {out}" in line, line
    data = yaml.safe_load((work / "batch.yaml").read_text())
    data["defaults"]["grid_epc"] = str(out)
    (work / "reads-out.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    proc = launch(work / "reads-out.yaml", tmp_path / "next.epc")
    line = one_error_line(proc, ExitCode.BATCH)
    assert "not found" in line and str(staging / "replaced") in line, line
    assert not out.exists() and (staging / "replaced" / "faults.epc").exists()
