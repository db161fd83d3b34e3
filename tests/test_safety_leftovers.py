"""Safety leftovers: --fresh replaces only a journal resqmp wrote, a refused launch leaves nothing
new behind, and an uploaded package's symbolic links are followed or refused, never dropped.
Real launches (refused before any cluster starts) and real files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_resqmp
from resqmp import upload
from resqmp.errors import BatchError, ExitCode
from test_bad_inputs import assert_one_line_error
from user_project import ALLOW_USER_WRAPPERS, write_project


@pytest.fixture
def outdir(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return path


def launch(batch, out, *extra, **kwargs):
    return run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, *extra, **kwargs)


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under folder, with a file's bytes: proves nothing was added, removed or changed."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(root) / name
            found[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
    return found


def _header(batch: Path) -> str:
    from resqmp.batch import load
    return json.dumps({"digest": load(batch).digest, "run_dir": "/nowhere"})


# -- 1. --fresh replaces only a journal resqmp wrote -----------------------------------------------

NOT_OURS = {
    "text": b"my own notes, not resqmp's\n",
    "json without a digest": b'{"name": "mine"}\n',
    "a list": b"[1, 2, 3]\n",
    "no newline": b"my notes",
    "binary": b"\x00\x01\x02\xff",
}


@pytest.mark.parametrize("text", list(NOT_OURS.values()), ids=list(NOT_OURS))
def test_fresh_never_replaces_a_file_at_the_journal_path_that_resqmp_did_not_write(work, outdir, text):
    out = outdir / "faults.epc"
    journal = outdir / "faults.journal.jsonl"
    journal.write_bytes(text)
    before = tree(outdir)
    proc = launch(work / "batch.yaml", out, "--fresh")
    line = assert_one_line_error(proc, ExitCode.OUTPUT, str(journal), "not a resqmp journal")
    assert "--fresh to start over" not in line        # --fresh would not replace it either
    assert "cluster up" not in proc.stderr
    assert tree(outdir) == before                     # the file as it was, nothing added beside it


def test_fresh_replaces_a_journal_resqmp_wrote(work, outdir):
    """Its header (the batch's digest): also one of another batch, or one cut short by a kill."""
    out = outdir / "faults.epc"
    journal = outdir / "faults.journal.jsonl"
    journal.write_text(json.dumps({"digest": "0" * 64, "run_dir": "/nowhere"}) + "\n[not json\n")
    launch(work / "batch.yaml", out, "--fresh", check=0)
    assert out.is_file() and not journal.exists()


def test_fresh_replaces_a_journal_cut_short_by_a_kill(work, outdir):
    out = outdir / "faults.epc"
    journal = outdir / "faults.journal.jsonl"
    journal.write_bytes(_header(work / "batch.yaml").encode()[:20])
    launch(work / "batch.yaml", out, "--fresh", check=0)
    assert out.is_file() and not journal.exists()


# -- 2. a refused launch leaves nothing new behind ------------------------------------------------

def _bad_journal(work: Path, journal: Path) -> None:
    """resqmp's header, then a line that is not JSON: refused without --fresh."""
    journal.write_text(_header(work / "batch.yaml") + "\n{not json\n")


def test_a_refused_journal_leaves_no_task_folder_beside_out(work, outdir):
    journal = outdir / "faults.journal.jsonl"
    _bad_journal(work, journal)
    before = tree(outdir)
    proc = launch(work / "batch.yaml", outdir / "faults.epc")
    assert_one_line_error(proc, ExitCode.OUTPUT, str(journal), "--fresh")
    assert tree(outdir) == before                     # no .resqmp-tasks/ left behind


def test_a_refused_journal_leaves_no_shared_directory_it_made(work, outdir, tmp_path):
    journal = outdir / "faults.journal.jsonl"
    _bad_journal(work, journal)
    shared = tmp_path / "scratch" / "deeper" / "tasks"
    before = tree(tmp_path)
    proc = launch(work / "batch.yaml", outdir / "faults.epc", "--set", f"storage.shared_directory={shared}")
    assert_one_line_error(proc, ExitCode.OUTPUT, str(journal))
    assert tree(tmp_path) == before                   # not tasks/, nor the folders made for it


def test_a_refused_journal_keeps_a_shared_directory_that_was_there(work, outdir, tmp_path):
    journal = outdir / "faults.journal.jsonl"
    _bad_journal(work, journal)
    shared = tmp_path / "scratch"
    shared.mkdir()
    proc = launch(work / "batch.yaml", outdir / "faults.epc", "--set", f"storage.shared_directory={shared}")
    assert_one_line_error(proc, ExitCode.OUTPUT, str(journal))
    assert shared.is_dir() and list(shared.iterdir()) == []


# -- 3. symbolic links in an uploaded package -----------------------------------------------------

def _package(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "__init__.py").write_text("x = 1\n")
    return path


def test_links_inside_an_uploaded_package_are_followed(tmp_path):
    pkg = _package(tmp_path / "linked_pkg")
    _package(pkg / "_impl")
    (pkg / "_impl" / "core.py").write_text("y = 2\n")
    (pkg / "core").symlink_to("_impl")                     # a folder, relative link
    (pkg / "alias.py").symlink_to(pkg / "_impl" / "core.py")   # a file, absolute link
    files = dict(upload.read(pkg).files)
    assert files["linked_pkg/core/core.py"] == b"y = 2\n"
    assert files["linked_pkg/core/__init__.py"] == b"x = 1\n"
    assert files["linked_pkg/alias.py"] == b"y = 2\n"
    assert files["linked_pkg/_impl/core.py"] == b"y = 2\n"


def _outside_folder(tmp_path: Path) -> tuple[Path, Path]:
    pkg = _package(tmp_path / "leaky_pkg")
    (tmp_path / "shared_code").mkdir()
    (tmp_path / "shared_code" / "util.py").write_text("z = 3\n")
    (pkg / "util").symlink_to(tmp_path / "shared_code")
    return pkg, pkg / "util"


def _outside_file(tmp_path: Path) -> tuple[Path, Path]:
    pkg = _package(tmp_path / "leaky_pkg")
    (tmp_path / "util.py").write_text("z = 3\n")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "util.py").symlink_to("../../util.py")
    return pkg, pkg / "sub" / "util.py"


def _loop(tmp_path: Path) -> tuple[Path, Path]:
    pkg = _package(tmp_path / "loop_pkg")
    (pkg / "sub").mkdir()
    (pkg / "sub" / "again").symlink_to("..")             # inside, but a loop
    return pkg, pkg / "sub" / "again"


@pytest.mark.parametrize("make, says", [(_outside_folder, "outside"), (_outside_file, "outside"),
                                        (_loop, "loop")], ids=["folder outside", "file outside", "loop"])
def test_a_link_out_of_an_uploaded_package_is_refused_naming_it(tmp_path, make, says):
    pkg, link = make(tmp_path)
    with pytest.raises(BatchError) as e:
        upload.read(pkg)
    assert str(link) in str(e.value) and says in str(e.value), e.value


def test_a_link_out_of_an_uploaded_package_refuses_the_launch(example, tmp_path):
    pkg, link = _outside_folder(tmp_path)
    batch = write_project(tmp_path / "project", example)
    out = tmp_path / "out" / "faults.epc"
    out.parent.mkdir()
    proc = run_resqmp("launch", "--profile", "local", "--batch", batch, "--output", out, "--upload", pkg,
                      *ALLOW_USER_WRAPPERS, cwd=tmp_path)
    assert_one_line_error(proc, ExitCode.BATCH, f"--upload {pkg}", str(link), "outside")
    assert "cluster up" not in proc.stderr and list(out.parent.iterdir()) == []


def test_folder_links_that_lead_round_in_a_circle_are_refused(tmp_path):
    pkg = _package(tmp_path / "circle_pkg")
    (pkg / "a").mkdir()
    (pkg / "b").mkdir()
    (pkg / "a" / "to_b").symlink_to("../b")
    (pkg / "b" / "to_a").symlink_to("../a")
    with pytest.raises(BatchError) as e:
        upload.read(pkg)
    assert "loop" in str(e.value), e.value
