"""A run that completes removes its task folder; it must not remove anything of a launch that
started on the same OUT once this run's journal was gone.

The journal is OUT's lock: a second launch creates a new journal file (a new inode) the moment
the old one is unlinked, and locks that. _finish unlinked the journal and only then removed the
task folder, whose path is the same for every run on OUT (run.run_directory): a removal that
takes minutes on a shared filesystem with many task files deleted the second launch's new task
outputs as they were written (its tasks then failed as DamagedOutput). Now the task folder is
renamed aside while the journal still holds OUT, and removed from there."""
from __future__ import annotations

from pathlib import Path

from resqmp import journal as journal_mod
from resqmp.outputs import journal_path


def test_a_launch_that_starts_as_the_last_one_ends_keeps_its_task_files(example, tmp_path, monkeypatch):
    from resqmp.run import launch, run_directory
    out = tmp_path / "faults.epc"
    seen: dict[str, Path] = {}
    remove = journal_mod.Journal.remove

    def remove_then_a_second_launch_starts(self):
        remove(self)
        # as a second launch on OUT would, now that the journal is gone: its own journal (locked)
        # and its first task output, in the task folder every run on OUT uses
        second = journal_mod.Journal(out, "another batch's digest", self.run_dir, 1)
        seen["journal"] = second
        run_dir = Path(self.run_dir)
        (run_dir / "task-0").mkdir(parents=True, exist_ok=True)
        seen["output"] = run_dir / "task-0" / "its-output.epc"
        seen["output"].write_bytes(b"the second launch's task output")

    monkeypatch.setattr(journal_mod.Journal, "remove", remove_then_a_second_launch_starts)
    result = launch("local", str(example["batch"]), str(out), workers=2)
    assert result.exit_code == 0
    try:
        assert seen["output"].read_bytes() == b"the second launch's task output"
        assert journal_path(out).exists()             # the second launch's, untouched
        # the first run's own task files are gone all the same, nothing set aside left behind
        shared = Path(seen["output"]).parent.parent.parent
        assert sorted(p.name for p in shared.iterdir()) == [run_directory(shared, out.resolve()).name]
        assert [p.name for p in Path(seen["output"]).parent.parent.iterdir()] == ["task-0"]
    finally:
        seen["journal"].close()


def test_a_task_folder_set_aside_by_a_killed_launcher_goes_with_the_next_run_on_that_output(example, tmp_path):
    """The launcher killed between setting its task folder aside and removing it: the next launch
    on that OUT removes it; a folder of another OUT named alike, or not exactly so, stays."""
    from resqmp.run import ASIDE, launch, run_directory
    out = tmp_path / "faults.epc"
    shared = tmp_path / ".resqmp-tasks"
    mine = run_directory(shared, out.resolve())
    theirs = run_directory(shared, (tmp_path / "other.epc").resolve())
    left = [mine.with_name(mine.name + ASIDE + "0123abcd"), theirs.with_name(theirs.name + ASIDE + "0123abcd"),
            mine.with_name(mine.name + ASIDE + "0123abcd-mine"), mine.with_name(mine.name + ASIDE + "0123ABCD")]
    for folder in left:
        (folder / "task").mkdir(parents=True)
        (folder / "task" / "out.epc").write_bytes(b"x")
    result = launch("local", str(example["batch"]), str(out), workers=2)
    assert result.exit_code == 0
    assert [p.exists() for p in left] == [False, True, True, True]
