"""Checks made before work is sent: the shared directory and what workers can see."""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from resqmp.errors import ClusterError, OutputError


def shared_directory(profile, output: Path) -> Path:
    """The profile's storage.shared_directory ($VARS and ~ expanded), or a folder beside OUT."""
    configured = profile.storage.get("shared_directory")
    if configured:
        return Path(os.path.expanduser(os.path.expandvars(configured)))
    return output.parent / ".resqmp-tasks"


def check_shared_directory(path: Path) -> None:
    """Exists (created if missing) and writable: before any job is submitted."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"shared directory {path}: cannot create it ({e.strerror})") from None
    if not path.is_dir():
        raise OutputError(f"shared directory {path}: not a directory")
    probe = path / f".resqmp-write-test-{secrets.token_hex(4)}"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"shared directory {path}: not writable ({e.strerror})") from None


def check_output(output: Path) -> None:
    """OUT's folder exists, is a directory and is writable; OUT is not a directory."""
    parent = output.parent
    if not parent.exists():
        raise OutputError(f"output {output}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"output {output}: {parent} is not a directory")
    if output.is_dir():
        raise OutputError(f"output {output}: is a directory; expected an .epc file path")
    if output.suffix.lower() != ".epc":
        raise OutputError(f"output {output}: expected a path ending in .epc")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output {output}: folder {parent} is not writable")


ROOM_MARGIN = 1 << 20      # bytes kept free beyond what one merge can write


def check_room(output: Path, task_epc: str | None) -> None:
    """Before a task's output is merged: OUT's filesystem must hold at least that task's files.
    HDF5 does not fail cleanly on a full disk (errors surface as RuntimeError and crashes at
    exit), so a merge must not start without room."""
    if not task_epc:
        return
    needed = ROOM_MARGIN
    for part in (Path(task_epc), Path(task_epc).with_suffix(".h5")):
        try:
            needed += part.stat().st_size
        except OSError:
            pass
    free = shutil.disk_usage(output.parent).free
    if free < needed:
        raise OutputError(f"output {output}: no space left on device ({free // 1024} KiB free, "
                          f"a merge needs up to {needed // 1024} KiB); nothing was written at OUT, "
                          f"finished tasks are kept: free space and run the same command to resume")


def is_disk_full(error: BaseException) -> bool:
    """HDF5 reports ENOSPC as a RuntimeError whose text carries the errno."""
    text = str(error)
    return "errno = 28" in text or "No space left on device" in text


def check_workers_see(client, shared_dir: Path, inputs: list[str]) -> dict:
    """The first worker must read a token the client wrote in the shared directory and see every
    input file. The classic failure is a task directory on node-local /tmp."""
    from resqmp.tasks import probe
    token = secrets.token_hex(16)
    token_file = shared_dir / f".resqmp-probe-{token[:8]}"
    token_file.write_text(token)
    try:
        worker = next(iter(client.scheduler_info()["workers"]))
        result = client.submit(probe, str(shared_dir), str(token_file), token, inputs,
                               workers=[worker], pure=False).result(timeout=120)
    finally:
        token_file.unlink(missing_ok=True)
    where = f"worker {result['worker']} on host {result['host']}"
    if not result["token_seen"]:
        raise ClusterError(f"shared directory {shared_dir}: {where} cannot read a file the launcher wrote there; "
                           f"storage.shared_directory must be on storage every node shares (not node-local /tmp)")
    if not result["shared_writable"]:
        raise ClusterError(f"shared directory {shared_dir}: {where} cannot write there")
    if result["missing_inputs"]:
        raise ClusterError(f"input {result['missing_inputs'][0]}: not visible from {where}; "
                           f"inputs must be on storage the workers share")
    return result
