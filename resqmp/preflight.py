"""Checks made before work is sent: OUT and every file written for it, the inputs it must never
touch, the shared directory, and what workers can see."""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat
import time
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from resqmp.errors import ClusterError, OutputError
from resqmp.outputs import (h5_of, is_staging_of, new_staging, partial_path, report_path, report_temp,
                            written_files)
from resqmp.paths import absolute_directory, real

log = logging.getLogger("resqmp")


def shared_directory(profile, output: Path) -> Path:
    """The profile's storage.shared_directory (expanded by the launcher's one rule, paths.py), or a
    folder beside OUT."""
    configured = profile.storage.get("shared_directory")
    if configured:
        return Path(absolute_directory(str(configured), "storage.shared_directory"))
    return output.parent / ".resqmp-tasks"


def check_shared_directory(path: Path) -> list[Path]:
    """Exists (created if missing) and writable: before any job is submitted. Returns the folders
    it created, outermost first, for a launch refused before any work to remove (remove_folders):
    a refused launch leaves nothing new behind. A refusal here removes them itself."""
    made = [folder for folder in (path, *path.parents) if not os.path.lexists(folder)][::-1]
    try:
        _check_shared_directory(path)
    except OutputError:
        remove_folders(made)
        raise
    return made


def remove_folders(made: list[Path]) -> None:
    """Undo check_shared_directory: the folders it made, innermost first, each only while empty
    (another launch may have put its task folder there meanwhile: that one and its parents stay)."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            return


def _check_shared_directory(path: Path) -> None:
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
    """Everything about OUT that can fail, checked before any work: its folder exists and is
    writable (a staging folder can be made there), its name is one resqpy can write and read,
    and every file written for it (outputs.written_files) is absent or a file that can be replaced."""
    parent = output.parent
    if not parent.exists():
        raise OutputError(f"output {output}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"output {output}: {parent} is not a directory")
    if output.is_dir():
        raise OutputError(f"output {output}: is a directory; expected an .epc file path")
    if output.suffix != ".epc":
        case = " in lower case (resqpy reads and writes only '.epc')" if output.suffix.lower() == ".epc" else ""
        raise OutputError(f"output {output}: expected a path ending in .epc{case}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output {output}: folder {parent} is not writable")
    _check_names(output)
    for what, path in written_files(output).items():
        _check_replaceable(output, what, path)
    _probe_staging(output)


def _probe_staging(output: Path) -> None:
    """Do there what publishing will do: make a staging folder, create an HDF5 file in it (h5py
    fails on filesystems without file locking unless HDF5_USE_FILE_LOCKING=FALSE) and rename it."""
    import h5py
    staging = new_staging(output)
    try:
        staging.mkdir()
    except OSError as e:
        raise OutputError(f"output {output}: cannot create its staging folder {staging} ({e.strerror})") from None
    try:
        with h5py.File(staging / "probe.h5", "w"):
            pass
        os.replace(staging / "probe.h5", staging / "renamed.h5")
    except OSError as e:
        raise OutputError(f"output {output}: cannot write an HDF5 file in its folder ({e.strerror or e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_names(output: Path) -> None:
    """Each name fits the folder's filesystem, and the .h5 names fit in the EPC's XML."""
    try:
        name_max = os.pathconf(output.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for name in [p.name for p in written_files(output).values()] + [new_staging(output).name,
                                                                report_temp(output).name]:
        if len(os.fsencode(name)) > name_max:
            raise OutputError(f"output {output}: name too long: resqmp writes {name!r} beside it, longer "
                              f"than the {name_max} bytes a name may have there; choose a shorter name")
    from lxml import etree          # resqpy's XML library
    for epc in (output, partial_path(output)):
        try:
            etree.Element("Relationship").set("Target", h5_of(epc).name)
        except ValueError as e:
            raise OutputError(f"output {output}: resqpy records the name of the .h5 ({h5_of(epc).name!r}) "
                              f"in the EPC's XML, which cannot hold it ({e}); choose another name") from None


def _lstat(output: Path, what: str, path: Path) -> os.stat_result | None:
    """The entry at path itself (a link is not followed), or None when there is none; a path that
    cannot be looked at is an output error naming it as OUT's `what`."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OutputError(f"output {output}: cannot inspect its {what} {path} ({e.strerror})") from None


def _check_replaceable(output: Path, what: str, path: Path) -> None:
    """Absent, or a file this process can replace by renaming over it."""
    st = _lstat(output, what, path)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output {output}: its {what} {path} is a directory; expected a file or nothing there")
    if stat.S_ISLNK(st.st_mode):
        return                      # a rename replaces the link itself, never what it points to
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"output {output}: its {what} {path} is not a regular file")
    if not os.access(path, os.W_OK):
        raise OutputError(f"output {output}: its {what} {path} is not writable (read-only or immutable); "
                          f"resqmp would replace it: make it writable or choose another name")
    folder = os.stat(path.parent)
    if folder.st_mode & stat.S_ISVTX and os.geteuid() not in (0, st.st_uid, folder.st_uid):
        raise OutputError(f"output {output}: its {what} {path} belongs to another user in a sticky "
                          f"folder; resqmp could not replace it")


def _h5_files(epc: Path) -> list[Path]:
    """The .h5 beside an EPC (resqpy's default) and those its external-part references name."""
    found = [h5_of(epc)]
    try:
        with zipfile.ZipFile(epc) as z:
            for name in z.namelist():
                if name.startswith("_rels/") and "EpcExternalPartReference" in name:
                    for rel in ElementTree.fromstring(z.read(name)):
                        target = rel.get("Target")
                        if rel.get("Id") == "Hdf5File" and target:
                            found.append(epc.parent / os.path.basename(target))
    except (OSError, zipfile.BadZipFile, ElementTree.ParseError):
        pass                        # an unreadable EPC is the batch check's business
    return found


def _batch_inputs(batch) -> dict[Path, str]:
    """Every existing file or folder the batch names (the batch file, *_epc with their .h5,
    other *_file/_path/_dir values), by resolved path, with where it was named."""
    from resqmp.batch import PATH_SUFFIXES
    found: dict[Path, str] = {real(batch.path): f"the batch file {batch.path}"}
    seen: set[str] = set()          # tasks share their inputs: each is looked at once
    for i, kwargs in enumerate(batch.tasks):
        for key, value in kwargs.items():
            if not (key.endswith(PATH_SUFFIXES) and isinstance(value, str)) or value in seen:
                continue
            seen.add(value)
            if not os.path.lexists(value):
                continue
            found.setdefault(real(value), f"{key} of tasks[{i}] {value}")
            if key.endswith("_epc"):
                for h5 in _h5_files(Path(value)):
                    if os.path.lexists(h5):
                        found.setdefault(real(h5), f"the .h5 of {key} of tasks[{i}] {h5}")
    return found


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def input_at(path: Path, batch) -> str | None:
    """Where the batch names the input that `path` would replace (the same path after resolving
    links, or the same file: a hard link), or None when `path` is none of its inputs."""
    resolved = real(path)                   # a link loop at path is no input
    for input_path, label in _batch_inputs(batch).items():
        if input_path == resolved or _same(input_path, path):
            return label
    return None


def check_inputs_untouched(output: Path, batch, run_dir: Path) -> None:
    """No file written for OUT is an input (same path after resolving links, or the same file),
    and no input lies where resqmp removes things: OUT's task directory, a staging folder."""
    written = written_files(output)
    task_dir = real(run_dir)
    for path, label in _batch_inputs(batch).items():
        for what, target in written.items():
            if path == real(target) or _same(path, target):
                whose = "it" if what == "OUT" else f"its {what} {target}"
                raise OutputError(f"output {output}: {whose} would replace an input of the batch, {label}; "
                                  f"choose another --output")
        if path.is_relative_to(task_dir):
            raise OutputError(f"output {output}: its task directory {run_dir} holds an input of the batch, "
                              f"{label}; resqmp removes that directory: move the input or set "
                              f"storage.shared_directory elsewhere")
        for folder in (path, *path.parents):
            if folder.parent == output.parent and is_staging_of(output, folder.name):
                raise OutputError(f"output {output}: the input {label} is inside {folder}, a name resqmp "
                                  f"uses for OUT's staging folders and removes: move it")


def check_task_directory(output: Path, run_dir: Path) -> None:
    """OUT's task directory is absent or a folder, not a link: its name is predictable (a hash of
    OUT), and a link planted there would send the task files, which are merged into OUT, into a
    folder someone else controls. (Its owner is not checked: on root-squashed NFS a folder the
    same user made shows another owner.)"""
    st = _lstat(output, "task directory", run_dir)
    if st is None:
        return
    hint = "resqmp writes the task files there and removes it"
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"output {output}: its task directory {run_dir} is a symbolic link (to "
                          f"{os.readlink(run_dir)}); {hint}: remove the link")
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"output {output}: its task directory {run_dir} is not a directory; {hint}")


def check_log_file(profile, output: Path, batch) -> None:
    """The profile's logging.file, which every worker appends to, is none of OUT's files and no
    input of the batch, and nothing but a regular file (a FIFO would hold every worker's start).
    Expanded here as a local worker expands it ($VARS, ~, relative to this folder)."""
    configured = profile.logging.get("file")
    if not configured:
        return
    path = Path(os.path.abspath(os.path.expanduser(os.path.expandvars(str(configured)))))
    where = f"profile {profile.source}: logging.file {path}"
    if os.path.lexists(path) and not path.is_file():
        raise OutputError(f"{where}: exists and is not a regular file; every worker appends its log there")
    resolved = real(path)
    named = [(f"OUT's {what} {target}" if what != "OUT" else f"OUT {target}", target)
             for what, target in written_files(output).items()]
    named += [(label, target) for target, label in _batch_inputs(batch).items()]
    for label, target in named:
        if resolved == real(target) or _same(path, target):
            raise OutputError(f"{where}: is {label}; every worker appends its log there: choose another "
                              f"logging.file")


def previous_report(output: Path) -> dict | None:
    """The report beside OUT when it is resqmp's report for this very output, else None."""
    try:
        data = json.loads(report_path(output).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):     # RecursionError: nested deeper than json reads
        return None
    return data if isinstance(data, dict) and data.get("output") == str(output) else None


def check_ownership(output: Path, overwrite: bool) -> dict | None:
    """Files at OUT's names that resqmp did not write for this output (no report of ours beside
    OUT naming them) are replaced only with --overwrite. Returns the previous report, if ours."""
    report = previous_report(output)
    if overwrite:
        return report
    hint = "move it, or pass --overwrite to replace it"
    if os.path.lexists(report_path(output)) and report is None:
        raise OutputError(f"output {output}: {report_path(output)} exists and is not resqmp's report for "
                          f"this output; resqmp writes its report there: {hint}")
    for path in (output, h5_of(output)):
        if os.path.lexists(path) and report is None:
            raise OutputError(f"output {output}: {path} exists and resqmp did not write it for this output "
                              f"(no report of ours beside it names it): {hint}")
    if os.path.lexists(output):
        partial = partial_path(output)
        for path in (partial, h5_of(partial)):
            if os.path.lexists(path) and report.get("partial_output") != str(partial):
                raise OutputError(f"output {output}: {path} exists and resqmp did not write it; a run that is "
                                  f"not fully successful writes its model there and keeps OUT: {hint}")
    return report


ROOM_MARGIN = 1 << 20      # bytes kept free beyond what one merge can write


#: with at least this much free at OUT, the free space read up to a second ago (less what the
#: merges since may have written) stands for the filesystem's: one statvfs a second, not one a task
ROOM_PLENTY = 1 << 30
ROOM_READ_EVERY = 1.0


class RoomCheck:
    """check_room for one run's merges: the same refusal, the filesystem asked at most once a
    second while more than ROOM_PLENTY would remain (every time below that)."""

    def __init__(self, output: Path):
        self.output = output
        self._free: int | None = None       # free bytes last read, less what merges since needed
        self._read_at = 0.0

    def __call__(self, task_epc: str | None) -> None:
        if not task_epc:
            return
        needed = _needed(task_epc)
        now = time.monotonic()
        if self._free is None or self._free - needed < ROOM_PLENTY or now - self._read_at >= ROOM_READ_EVERY:
            self._free, self._read_at = shutil.disk_usage(self.output.parent).free, now
        _refuse_without_room(self.output, self._free, needed)
        self._free -= needed


def check_room(output: Path, task_epc: str | None) -> None:
    """Before a task's output is merged: OUT's filesystem must hold at least that task's files.
    HDF5 does not fail cleanly on a full disk (errors surface as RuntimeError and crashes at
    exit), so a merge must not start without room."""
    if not task_epc:
        return
    needed = _needed(task_epc)
    _refuse_without_room(output, shutil.disk_usage(output.parent).free, needed)


def _needed(task_epc: str) -> int:
    """What merging the task's files can write at most: their size, and a margin."""
    needed = ROOM_MARGIN
    task_epc = str(task_epc)
    for part in (task_epc, task_epc[:-4] + ".h5" if task_epc.endswith(".epc") else str(Path(task_epc).with_suffix(".h5"))):
        try:
            needed += os.stat(part).st_size
        except (OSError, ValueError):
            pass
    return needed


def _refuse_without_room(output: Path, free: int, needed: int) -> None:
    if free < needed:
        raise OutputError(f"output {output}: no space left on device ({free // 1024} KiB free, "
                          f"a merge needs up to {needed // 1024} KiB); nothing was written at OUT, "
                          f"finished tasks are kept: free space and run the same command to resume")


def is_disk_full(error: BaseException) -> bool:
    """HDF5 reports ENOSPC as a RuntimeError whose text carries the errno."""
    text = str(error)
    return "errno = 28" in text or "No space left on device" in text


#: how long the shared-storage check waits for the rest of the planned workers after the first
PLANNED_WORKERS_GRACE = 120.0


def check_workers_see(client, shared_dir: Path, inputs: list[str], planned: int = 1,
                      timeout: float = 120) -> dict:
    """Every node that runs a worker must read a token the client wrote in the shared directory,
    write there, and see every input file, before any task is sent. The classic failure is a task
    directory on node-local /tmp; on a cluster, one node can also miss a mount the others have.

    Waits for the `planned` workers (the cluster's plan) at most PLANNED_WORKERS_GRACE s (and never
    longer than `timeout`): on a busy site some jobs queue for hours, and the batch must not wait
    for them; the run goes on with the workers that came. Then probes one worker per host. Returns
    the first worker's probe, with "hosts": every host checked."""
    from distributed import wait

    from resqmp.tasks import probe
    grace = min(timeout, PLANNED_WORKERS_GRACE)
    try:
        client.wait_for_workers(max(1, planned), timeout=grace)
    except TimeoutError:
        log.warning("%d of %d planned workers joined within %.0f s; checked the nodes of those",
                    len(client.scheduler_info()["workers"]), planned, grace)
    if not client.scheduler_info()["workers"]:
        # the first worker came and went (a job at the end of its walltime; a replacement is
        # on its way): wait for one, within the check's timeout
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ClusterError(f"shared directory {shared_dir}: no worker connected within {timeout:.0f} s "
                               f"to check it from (the first one left)") from None
    one_per_host: dict[str, str] = {}
    for address, info in client.scheduler_info()["workers"].items():
        one_per_host.setdefault(info.get("host") or address, address)
    token = secrets.token_hex(16)
    token_file = shared_dir / f".resqmp-probe-{token[:8]}"
    token_file.write_text(token)
    try:
        futures = [client.submit(probe, str(shared_dir), str(token_file), token, inputs, workers=[worker],
                                 allow_other_workers=False, pure=False) for worker in one_per_host.values()]
        try:
            wait(futures, timeout=120)
        except TimeoutError:
            raise ClusterError(f"shared directory {shared_dir}: no answer within 120 s to the shared-directory "
                               f"check from worker(s) {', '.join(one_per_host.values())}") from None
        results = client.gather(futures)
        for f in futures:
            f.release()
    finally:
        token_file.unlink(missing_ok=True)

    def where(r: dict) -> str:
        return f"{r['host']} (worker {r['worker']})"

    blind = [r for r in results if not r["token_seen"]]
    if blind:
        raise ClusterError(f"shared directory {shared_dir}: "
                           + "; ".join(f"{where(r)}: cannot read a file the launcher wrote there" for r in blind)
                           + "; storage.shared_directory must be on storage every node shares (not node-local /tmp)")
    read_only = [r for r in results if not r["shared_writable"]]
    if read_only:
        raise ClusterError(f"shared directory {shared_dir}: "
                           + "; ".join(f"{where(r)} cannot write there" for r in read_only))
    missing = [r for r in results if r["missing_inputs"]]
    if missing:
        raise ClusterError(f"input {missing[0]['missing_inputs'][0]}: not visible from "
                           + ", ".join(where(r) for r in missing) + "; inputs must be on storage the workers share")
    return {**results[0], "hosts": sorted(r["host"] for r in results)}


def check_wrapper_on_workers(client, wrapper: str, plugin: str | None = None,
                             uploaded: dict[str, str] | None = None, timeout: float = 300) -> list[dict]:
    """Every worker connected now imports the batch's wrapper, from this run's upload where its
    module was uploaded (tasks.upload / --upload). Fails naming the worker and the import error:
    the classic failure is a module beside the batch that a worker started elsewhere cannot see."""
    from distributed import wait
    from resqmp.upload import wrapper_imports_here
    workers = list(client.scheduler_info()["workers"])
    futures = [client.submit(wrapper_imports_here, wrapper, plugin, uploaded or {}, workers=[w],
                             allow_other_workers=False, pure=False) for w in workers]
    try:
        wait(futures, timeout=timeout)
    except TimeoutError:
        still = set(client.scheduler_info()["workers"])
        silent = [w for w, f in zip(workers, futures) if not f.done() and w in still]
        if silent:
            raise ClusterError(f"wrapper {wrapper}: worker {silent[0]} did not answer the import check "
                               f"within {timeout:.0f} s") from None
    results = [f.result() for f in futures if f.done()]      # a worker that left meanwhile is skipped
    for f in futures:
        f.release()
    for result in results:
        if result["error"]:
            where = f"worker {result['worker']} on host {result['host']}"
            hint = "" if (uploaded and wrapper.partition(":")[0].split(".")[0] in uploaded) else \
                "; if it is your own code, ship it to the workers with --upload PATH or the profile's tasks.upload"
            raise ClusterError(f"wrapper {wrapper}: does not import on {where}: {result['error']}{hint}")
    return results
