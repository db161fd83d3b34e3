"""Group partials: a worker gathers its group's task outputs into one EPC + HDF5 file, so the
launcher opens one model and one HDF5 file per group instead of one per task.

The partial is the union of the group's task models, copied with resqmp.merge.Merger without
consolidation: every part keeps its uuid and its XML (HDF5 references aside), and its arrays sit
in the partial's HDF5 file. Consolidation stays in the launcher, task by task, so its decisions
are resqpy's flat ones: consolidating in two levels (within the group, then against the
recombined model) reaches equivalent parts too, but a reference rewritten in the partial turns
into a relationship added at another step of resqpy's copy, so the order of relationships in a
rels part could differ from resqpy's (issue 11, wave 3). Beside the partial, a manifest gives each task's
share: its uuids in resqpy's consolidation order (less its HDF5 external part's, of which resqpy
copies nothing) and, for every uuid of the task model, its related parts in the task's own part
order (all that the merge reads from a task model besides parts and arrays); and which of the
partial's datasets are plain (copied as stored, so the launcher copies them without opening each
to check). Merger.merge_share copies a share exactly as
merge_model copies the task model, and takes the XML of a part it copies unchanged from the
partial's stored bytes instead of serialising it again.

Each attempt of a group writes files of its own (a random token in the name): a group sent again
after its worker died never reuses a lost attempt's files, and only the partial named in the
records that came back is ever merged. Partials live in the run's task directory, removed with it.

That directory is often a group-writable project folder: whoever else may write there must not
choose where a partial is written (a symbolic link planted at groups/), nor make a worker write
through a link into one of the user's files (planted at a partial's name once its .h5 appears),
nor hand the launcher a partial of their own to merge. So partials live only in a groups/ folder
that is the user's alone (a real directory, owned by the process's uid, writable by no one else;
made 0o700), held open by a file descriptor and reached through /proc/self/fd/N, so that a rename
or a link put at its path after the check changes nothing; the manifest's temporary file is
created exclusively. When that cannot be had, no partial is written (a warning says why) and the
launcher merges the tasks' own files. The launcher, likewise, reads a partial only by its name in
this run's groups/ folder, after the same check (a record is data: a partial named anywhere else
is not read), so workers running as another uid than the launcher's (their groups/ is not the
launcher's to read) cost the launcher the partials, not the run. Nor does a partial that is not
all there: one whose EPC or .h5 does not appear in time (the launcher waits for both as for any
worker's file) is a partial gone, and no partial is read after it; one whose .h5 cannot give every
array its parts name is checked before any of its shares is copied (a copy stopped half-way through
a share would leave part of a task in the model) and costs its own group only.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import threading
import uuid as uuid_mod
from dataclasses import dataclass
from pathlib import Path

import h5py
import resqpy.model as rq
import resqpy.model._catalogue as m_c
import resqpy.olio.consolidation as cons
import resqpy.olio.uuid as bu

from resqmp.h5_copy import H5Tree
from resqmp.merge import _EXT, Merger, unknown_uuid
from resqmp.outputs import create_new, h5_of
from resqmp.splice_plan import plan_group
from resqmp.task_model import load_task_model

log = logging.getLogger(__name__)

#: the partials' folder inside the run's task directory
FOLDER = "groups"

#: a partial's EPC name as premerge_group makes it (first and last index, a random token); the
#: launcher reads no other name
_NAME = re.compile(r"g[0-9]{7,}-[0-9]{7,}-[0-9a-f]{12}\.epc")
#: any file premerge_group makes for a partial: its EPC, .h5, manifest and the manifest's temporary
_ATTEMPT_FILE = re.compile(r"(?P<group>g[0-9]{7,}-[0-9]{7,})-(?P<token>[0-9a-f]{12})\.(?:epc|h5|json|json\.tmp)")


def manifest_of(epc: str | Path) -> Path:
    return Path(epc).with_suffix(".json")


class NotPrivate(Exception):
    """The partials' folder is not known to be this user's alone: no partial goes there."""


def open_private(folder: Path) -> int:
    """A file descriptor on `folder`, checked to be a directory of this process's uid that no one
    else may write in; NotPrivate (why) otherwise. Nothing else can then create, replace or link
    a name in it, and through held_open(fd) it is that directory whatever is later put at its path."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(folder):
            raise NotPrivate(f"is a symbolic link (to {os.readlink(folder)})") from None
        if e.errno == errno.ENOTDIR:
            raise NotPrivate("is not a directory") from None
        if e.errno == errno.ENOENT:
            raise
        raise NotPrivate(f"cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise NotPrivate(f"belongs to uid {st.st_uid}, not to this process's uid {os.geteuid()}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise NotPrivate(f"is writable by others than its owner (mode {stat.S_IMODE(st.st_mode):04o})")
        try:
            same = os.path.samestat(os.stat(held_open(fd)), st)
        except OSError:
            same = False
        if not same:
            raise NotPrivate("cannot be held open on this system (no /proc/self/fd)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def held_open(fd: int) -> Path:
    """The directory open at `fd`, by a path no rename or link elsewhere can redirect (Linux)."""
    return Path(f"/proc/self/fd/{fd}")


#: (run, partials folder) this worker process found not private, said once each: once per run, not
#: once per group. Per run, not per worker: a worker of the user's own cluster outlives runs, and
#: a later run of the same run directory (a resume, the same OUT again) must be told in its own
#: log why it gets no partials. Not per folder identity: a folder still refused is news to each run.
#: The oldest are forgotten past REFUSED_KEPT (a worker serving run after run).
_refused_folders: dict[tuple[str | None, str], None] = {}
_refused_lock = threading.Lock()
REFUSED_KEPT = 64


def premerge_group(records: list[dict], run_dir: str, run: str | None = None) -> None:
    """On the worker, after the group ran: gather the successful tasks' outputs into one partial
    and name it in their records ("partial"). Fewer than two: nothing to gain, nothing written.
    Any failure leaves the records as they were: the launcher then merges each task's own file.
    `run`: the run's identity (its key prefix), the scope of a refused folder's warning."""
    shares = [r for r in records if r.get("success") and r.get("epc_file")]
    if len(shares) < 2:
        return
    folder = Path(run_dir) / FOLDER
    name = f"g{shares[0]['index']:07d}-{shares[-1]['index']:07d}-{uuid_mod.uuid4().hex[:12]}.epc"
    try:
        try:
            os.mkdir(folder, 0o700)        # only the user may create a name in it
        except FileExistsError:
            pass                           # another group's: checked as any other
        fd = open_private(folder)
    except (OSError, NotPrivate) as e:
        with _refused_lock:          # a worker with several threads runs groups side by side
            first = (run, str(folder)) not in _refused_folders
            if first:                 # once per run, not once per group
                _refused_folders[(run, str(folder))] = None
                while len(_refused_folders) > REFUSED_KEPT:
                    del _refused_folders[next(iter(_refused_folders))]
        if first:
            log.warning("group partials folder %s %s: no group partial written; the launcher merges the "
                        "tasks' own files", folder, e if isinstance(e, NotPrivate) else f"cannot be made ({e.strerror})")
        return
    try:
        epc = held_open(fd) / name
        try:
            shares = _write(shares, epc)
        except Exception as e:   # noqa: BLE001 - an optimisation: the launcher merges task files instead
            log.warning("group partial %s not written (%s: %s); the launcher merges the tasks' own files",
                        folder / name, type(e).__name__, e)
            for path in (epc, h5_of(epc), manifest_of(epc)):
                path.unlink(missing_ok=True)
            return
    finally:
        os.close(fd)
    for r in shares:
        r["partial"] = str(folder / name)


def _write(shares: list[dict], epc: Path) -> list[dict]:
    """The partial of `shares` at `epc`; returns the records whose share it holds. A task whose
    uuid_list names something that is no part of its own EPC (merge.unknown_uuid: resqpy's
    recombination raises on it) is left out of the partial, the group's other tasks not: the
    launcher merges that task's own file, which it refuses, naming the task and the culprit.
    Each share gets the plan of the launcher's merge of it (resqmp.splice_plan) when it has one."""
    model = rq.new_model(str(epc), quiet=True)
    merger = Merger(model, consolidate=False)
    merger.h5.plain = set()              # listed in the manifest: the launcher need not check them
    manifest: dict = {"tasks": {}}
    held = []
    tasks = []                           # (index, task model, uuid_list) for the plans
    try:
        for r in shares:
            stored: dict = {}
            task = load_task_model(r["epc_file"], raw=stored)
            try:
                if unknown_uuid(task, r["uuid_list"]) is not None:
                    continue             # said once, by the launcher
                manifest["tasks"][str(r["index"])] = _share(task, r["uuid_list"])
                # every part, not only the share's: the launcher's consolidation may read any
                # part the task model holds (a related part's object), as it reads the task model
                merger.merge_model(task, task.uuids(), stored=stored)
            finally:
                task.h5_release()
            held.append(r)
            tasks.append((r["index"], task, r["uuid_list"], stored))
        written = H5Tree(merger.h5.held)         # what the partial's HDF5 file holds
        merger.close()
        merger.store_epc(str(epc))
        manifest["plain"] = sorted(merger.h5.plain)      # the launcher copies these without checking
    finally:
        merger.close()
        model.h5_release()
    try:
        # the shadow's name: beside the partial, in the private folder; never a file
        for index, plan in plan_group(tasks, str(epc.with_name(epc.stem + "-shadow.epc")),
                                      partial=(written, merger.h5.plain)).items():
            manifest["tasks"][str(index)]["splice"] = plan
    except Exception as e:   # noqa: BLE001 - plans only save the launcher work: it merges without
        log.warning("group partial %s: no splice plans (%s: %s); the launcher merges its shares without",
                    epc.name, type(e).__name__, e)
    tmp = manifest_of(epc).with_suffix(".json.tmp")
    fd = create_new(tmp, 0o600)          # never through a link planted at that name
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(manifest))
        os.replace(tmp, manifest_of(epc))     # present only complete
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return held


def _share(task, uuid_list: list[str]) -> dict:
    """What Merger.merge_model reads from the task model besides parts and arrays. The share's
    uuids leave out the task's HDF5 external part (obj_EpcExternalPartReference) if its uuid_list
    names it: resqpy's copy of that part copies nothing (copy_part_from_other_model returns None
    for its type, after at most finding it resident: no part, relationship or array, nothing to
    consolidate), and the partial does not hold it (the partial has an external part of its own,
    another uuid), so naming it would make the launcher refuse the whole partial as lacking a
    part. Leaving entries out of a sorted list keeps the others' order: resqpy's, by type rank,
    then uuid."""
    if not task.rels_present:
        raise ValueError("task model without relationships")      # resqpy's merge fails on it too
    ordered = cons.sort_uuids_list(task, uuid_list)
    if ordered is None:
        ordered = task.uuids()
    ordered = [u for u in ordered if m_c._type_of_part(task, task.part_for_uuid(u)) != _EXT]
    parts = m_c._list_of_parts(task)
    related = {}
    for uuid_int in task.uuid_rels_dict:
        found = m_c._parts_list_filtered_by_related_uuid(task, parts, bu.uuid_from_int(uuid_int))
        if found:
            related[str(bu.uuid_from_int(uuid_int))] = found
    return {"uuids": [str(u) for u in ordered], "related": related}


def _related(entry: dict) -> dict[int, list[str]]:
    """A share's related parts (uuid int -> parts), as _share wrote them."""
    return {bu.uuid_from_string(u).int: list(parts) for u, parts in entry["related"].items()}


def _read_manifest(path: Path, shown: Path | None = None) -> dict | None:
    """The manifest as premerge_group writes it, or None (absent, cut short, edited: the launcher
    then merges the tasks' own files, which a partial never replaces). Absent is no news: on a
    shared filesystem that lags it may not be seen yet. `shown`: its name in a warning."""
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if isinstance(manifest, dict) and isinstance(manifest["tasks"], dict) and isinstance(manifest["plain"], list):
            return manifest
    except (OSError, ValueError, KeyError, RecursionError):
        pass
    log.warning("group partial manifest %s unreadable: the tasks' own files are merged instead", shown or path)
    return None


def _epc_problem(model, stored: dict, manifest: dict) -> str | None:
    """Why the partial's EPC, loaded as `model`, cannot give every share whole, or None. Loading
    drops a member it cannot read or parse, as resqpy's load does ("okay to continue?"): a share
    merged from what is left would lack that part and the run would end well without it, so every
    member must have loaded and every uuid the manifest names must have its part."""
    loaded = set(model.parts_forest) | set(model.rels_forest) | set(model.other_forest)
    for name, body in stored.items():
        if isinstance(body, Exception):
            return f"its member {name} cannot be read ({body})"
        if name != "[Content_Types].xml" and name not in loaded:
            return f"its member {name} cannot be parsed"
    for entry in manifest["tasks"].values():
        try:
            uuids = [bu.uuid_from_string(u) for u in entry["uuids"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            continue                  # not a share as premerge_group writes it: share() refuses it
        for uuid in uuids:
            if model.part_for_uuid(uuid) is None:
                return f"it lacks the part of {uuid}"
    return None


def _h5_problem(model, h5: Path) -> str | None:
    """Why the partial's HDF5 file `h5` cannot give every array its parts name (what a share's
    copy reads), or None. Checked before any share of the partial is merged: a copy that stopped
    half-way through a share would leave the recombined model with part of a task."""
    named = model.h5_file_name(file_must_exist=False)
    if named is None or Path(named) != h5:
        return f"is not the one its EPC names ({named})"
    try:
        with h5py.File(h5, "r") as f:
            for part in model.parts():
                # what the merge copies: rqet.list_of_descendant_tag(root, 'PathInHdfFile'), found
                # by lxml (any namespace) at a fraction of the cost; each opened as a dataset
                # without building h5py's objects (about 15 µs each)
                for node in model.root_for_part(part).iter("{*}PathInHdfFile"):
                    if not node.text or not _is_dataset(f, node.text):
                        return f"lacks the dataset {node.text} of part {part}"
    except (OSError, ValueError) as e:
        return f"cannot be read ({e})"
    return None


def _plan_paths(plan: dict) -> list:
    paths = plan.get("h5")
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def _tree_problem(h5: Path, paths: list[str]) -> tuple[str | None, H5Tree | None]:
    """(Why the partial's HDF5 file cannot give each of `paths` (the arrays its shares' plans
    copy) or None, what it holds): as _h5_problem, for the paths the plans name, from one visit of
    the file's names and one of its objects (each path a dataset by its own hard link: not a
    group, empty or not, nor a link, which a copy would bring into OUT as it is or fail on half-way
    through a share), with the tree for the plans' group copies."""
    try:
        with h5py.File(h5, "r") as f:
            tree = H5Tree.of_file(f)
    except Exception as e:   # noqa: BLE001 - whatever a damaged file makes HDF5 raise: only the shortcut is lost
        return f"cannot be read ({type(e).__name__}: {e})", None
    for path in paths:
        try:
            path.encode()                # the copy's name for it (a lone surrogate names nothing)
        except UnicodeEncodeError:
            return f"lacks the dataset {path!r}", None
        if not tree.is_dataset(path):
            return f"lacks the dataset {path}", None
    return None, tree


def _is_dataset(f, path: str) -> bool:
    try:
        h5py.h5d.open(f.id, path.encode()).close()
    except (KeyError, ValueError, TypeError, RuntimeError):
        return False
    return True


@dataclass
class Share:
    """One task's share of a group partial, as Merger.merge_share reads it."""
    model: object                        # the partial's model
    uuids: list[str]                     # the task's uuids, in resqpy's consolidation order
    related: dict[int, list[str]] | None  # uuid int -> related parts, in the task's part order (None: not read yet)
    stored: dict                         # the partial's members as stored (its parts' XML)
    proxy: str                           # the partial's HDF5 proxy uuid, in that XML
    plain: set[str]                      # the partial's plain datasets (resqmp.h5_copy)
    plan: dict | None = None             # the worker's plan of the launcher's merge (resqmp.splice_plan)
    h5: str = ""                         # the partial's HDF5 file (what a plan's arrays are copied from)
    index: int = -1                      # the task's index
    tree: H5Tree | None = None           # what the partial's HDF5 file holds (read for its plans)


class PartialReader:
    """The launcher's side: one group partial open at a time (a group's shares merge one after
    the other), its model loaded once. Only partials in `task_directory`/groups are read, that
    folder checked as the workers check it (open_private) and held open while a partial is in
    use; without a task directory, none is. `wait(path)` returns once `path` exists (a shared
    filesystem may show a worker's files late; `wait(path, seconds)`: that long at most), or raises."""

    def __init__(self, task_directory: str | Path | None = None, wait=None):
        self.folder = Path(task_directory) / FOLDER if task_directory is not None else None
        self._wait = wait or (lambda path, timeout=None: None)
        self.path: str | None = None
        self.model = None
        self._fd: int | None = None      # the folder, held open while its partial is in use
        self._manifest: dict = {}
        self._stored: dict = {}          # the partial's members as stored: its parts' XML
        self._proxy = ""
        self._plain: set[str] = set()
        self._h5 = ""                    # the partial's HDF5 file, by its held-open path
        self._tree: H5Tree | None = None  # what that file holds (when its shares have plans)
        self._planned = False            # its shares' plans are to be tried first (model not loaded)
        self._refused: set[str] = set()  # partials not read (said once each)
        self._folder_refused = False     # the folder is not the user's alone: no partial is read

    def share(self, epc: str, index: int, appear: float | None = None) -> Share | None:
        """Task `index`'s share of the partial `epc`, or None when the partial or the task's share
        in it is not there, or not to be read (the task's own file is merged then). `appear`:
        seconds to wait for its files (None: the waiter's own; 0: an earlier run's partial, looked
        for once, and if not there only that partial is given up, not the folder)."""
        if epc != self.path:
            self.release()
            if not self._open(epc, appear):
                return None
        try:
            entry = self._manifest["tasks"][str(index)]
            uuids = [str(u) for u in entry["uuids"]]
            plan = entry.get("splice") if self._planned else None
            # what only merge_share reads: read here unless a plan may make it unneeded
            related = None if plan is not None else _related(entry)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None               # not this task's share as premerge_group writes it
        return Share(self.model, uuids, related, self._stored, self._proxy, self._plain, plan, self._h5, index,
                     self._tree)

    def with_model(self, share: Share) -> Share | None:
        """`share` with the partial's model, loaded now if it was not (a partial whose shares have
        plans is loaded only when a plan does not apply); None when it cannot be (said once: the
        task's own file is merged instead, and every later share of this partial too)."""
        related = share.related
        if related is None:
            try:
                related = _related(self._manifest["tasks"][str(share.index)])
            except (KeyError, TypeError, ValueError, AttributeError):
                return None           # not this task's share as premerge_group writes it
        if self.model is None and (self.path is None or
                                   not self._load(self.path, held_open(self._fd) / Path(self.path).name)):
            return None
        return Share(self.model, share.uuids, related, self._stored, self._proxy, self._plain, share.plan, self._h5,
                     share.index, self._tree)

    def _open(self, epc: str, appear: float | None = None) -> bool:
        """Load the partial `epc` if it is to be read; False (said once) if not."""
        if self.folder is None or self._folder_refused or not isinstance(epc, str) or epc in self._refused:
            return False
        if Path(epc).parent != self.folder or not _NAME.fullmatch(Path(epc).name):
            self._refused.add(epc)
            log.warning("group partial %s is not one of this run's (in %s): the tasks' own files are merged "
                        "instead", epc, self.folder)
            return False
        try:
            self._wait(str(self.folder), appear)
        except FileNotFoundError:
            return self._not_there(epc, appear=appear)
        try:
            self._fd = open_private(self.folder)
        except (OSError, NotPrivate) as e:
            self._folder_refused = True
            log.warning("group partials folder %s %s: no group partial is read; the tasks' own files are "
                        "merged instead", self.folder, e if isinstance(e, NotPrivate) else f"cannot be read ({e})")
            return False
        found = held_open(self._fd) / Path(epc).name
        try:
            for path, what in ((found, ""), (h5_of(found), " (its HDF5 file)")):
                try:
                    # the .h5 is written before the EPC, but a shared filesystem may show it later
                    self._wait(str(path), appear)
                except FileNotFoundError:
                    return self._not_there(epc, what, appear)
            for path in (found, h5_of(found)):
                if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
                    self._refused.add(epc)
                    log.warning("group partial %s: %s is not a regular file; the tasks' own files are merged "
                                "instead", epc, path.name)
                    self.release()
                    return False
            manifest = _read_manifest(manifest_of(found), shown=manifest_of(epc))
            if manifest is None:
                self.release()
                return False
            self._manifest = manifest
            self._plain = {p for p in manifest["plain"] if isinstance(p, str)}
            self._h5 = str(h5_of(found))
            plans = [entry.get("splice") for entry in manifest["tasks"].values() if isinstance(entry, dict)]
            paths = [p for plan in plans if isinstance(plan, dict) for p in _plan_paths(plan)]
            if any(isinstance(plan, dict) for plan in plans):
                # the model is loaded only for a share whose plan does not apply (with_model); the
                # arrays every plan copies are checked now, before any share is copied
                problem, self._tree = _tree_problem(h5_of(found), paths)
                if problem is None:
                    self._planned = True
                    self.path = epc
                    return True
                self._refused.add(epc)
                log.warning("group partial %s: its HDF5 file %s; the tasks' own files are merged instead", epc, problem)
                self.release()
                return False
            return self._load(epc, found)
        except BaseException:
            self.release()
            raise

    def _load(self, epc: str, found: Path) -> bool:
        """Load the partial's model, checked whole (its EPC, its HDF5 file); False (said once, the
        partial released) when it cannot give every share."""
        try:
            self._stored = {}
            try:
                self.model = load_task_model(str(found), raw=self._stored)
            except Exception as e:   # noqa: BLE001 - cut short, not a zip: only the shortcut is lost
                problem = f"its EPC cannot be read ({type(e).__name__}: {e})"
            else:
                problem = _epc_problem(self.model, self._stored, self._manifest)
                if problem is None:
                    problem = _h5_problem(self.model, h5_of(found))
                    problem = problem and f"its HDF5 file {problem}"
            if problem is not None:
                self._refused.add(epc)
                log.warning("group partial %s: %s; the tasks' own files are merged instead", epc, problem)
                self.release()
                return False
            self._proxy = str(self.model.h5_uuid())
            self.path = epc
            return True
        except BaseException:
            self.release()
            raise

    def give_up(self, epc: str) -> None:
        """The partial `epc` is read no more (its file failed a copy: said by the caller)."""
        self._refused.add(epc)
        if self.path == epc:
            self.release()

    def _not_there(self, epc: str, what: str = "", appear: float | None = None) -> bool:
        """A partial (its folder, its EPC or its HDF5 file) that did not appear in time: a partial
        is only a shortcut, so the tasks' own files are merged, and no partial is read from now on
        (one wait, not one per group, when someone removed the folder or the filesystem does not
        show the workers' partials). `appear` 0 (an earlier run's partial, not waited for): only
        that partial is given up."""
        self.release()
        if appear == 0:
            # an earlier run's partial (a resume's journaled record), not waited for: that one is
            # gone, which says nothing of this run's partials
            self._refused.add(epc)
            log.warning("group partial %s%s of an earlier run is not there: the tasks' own files are merged "
                        "instead", epc, what)
            return False
        self._folder_refused = True
        log.warning("group partial %s%s did not appear: the tasks' own files are merged instead, for "
                    "every group from now on", epc, what)
        return False

    def remove_other_attempts(self, epc: str, named) -> list[str]:
        """After a group's records came back from an attempt that was not its first (a worker died
        holding it): the files other attempts of that group left, named as `epc` but for their
        token, that no record names (`named`: every partial the launcher was handed, the journal's
        too), are removed; their names. Those were never going to be read (only a partial a record
        names is), and no record can name them any more: a group's records come back once. Only in
        this run's groups/, checked and held open as for reading, only regular files, each removed
        by its name in that folder (a link is never followed); nothing when anything is in doubt."""
        if self.folder is None or self._folder_refused or not isinstance(epc, str):
            return []
        found = _NAME.fullmatch(Path(epc).name)
        if Path(epc).parent != self.folder or not found:
            return []
        group, token = Path(epc).stem.rsplit("-", 1)
        try:
            fd = open_private(self.folder)
        except (OSError, NotPrivate):
            return []
        removed = []
        try:
            for entry in os.listdir(fd):
                other = _ATTEMPT_FILE.fullmatch(entry)
                if other is None or other["group"] != group or other["token"] == token:
                    continue
                if str(self.folder / f"{group}-{other['token']}.epc") in named:
                    continue
                try:
                    if stat.S_ISREG(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode):
                        os.unlink(entry, dir_fd=fd)
                        removed.append(entry)
                except OSError:
                    continue
        except OSError:
            pass
        finally:
            os.close(fd)
        return removed

    def release(self) -> None:
        if self.model is not None:
            self.model.h5_release()
        if self._fd is not None:
            os.close(self._fd)
        self.path, self.model, self._fd, self._manifest, self._stored, self._plain = None, None, None, {}, {}, set()
        self._h5, self._planned, self._tree = "", False, None
