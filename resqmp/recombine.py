"""Merge task outputs into one model, in task order, as results arrive; publish atomically.

Content matches resqpy's function_multiprocessing: each task's uuid_list, ordered by
resqpy.olio.consolidation.sort_uuids_list, copied as Model.copy_uuid_from_other_model copies it
(consolidating equivalent parts when asked). The copying is resqmp.merge.Merger: resqpy's
algorithm with indexed consolidation, one open output HDF5 file and no whole-model scans, so each
task's merge costs the same whether it is the 10th or the 10,000th (resqpy's grows with N).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path

import resqpy.model as rq

from resqmp.errors import OutputError
from resqmp.h5_copy import MissingDataset
from resqmp.merge import Merger, unknown_uuid
from resqmp.outputs import create_new, h5_of, is_staging_of, new_staging, partial_path
from resqmp.premerge import PartialReader
from resqmp.splice import PartialUnusable
from resqmp.task_model import DamagedEPC, TreeCache, load_task_model

log = logging.getLogger(__name__)

#: how long a worker's file may take to appear to the launcher (NFS-like storage shows files late)
APPEAR_SECONDS = 300.0

#: in the staging folder: the XML of merged parts, out of memory until the publish (resqmp.epc_store)
SPILL = "parts.spill"


def _wait_for(path: str, timeout: float | None = None, exists=os.path.exists) -> None:
    """Task files written by workers can take time to appear to the client on NFS-like storage.
    timeout 0: an earlier run's file (a resume's journaled record), looked for once."""
    timeout = APPEAR_SECONDS if timeout is None else timeout
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not exists(path):
        if timeout <= 0:
            raise FileNotFoundError(f"task output {path} is not there (an earlier run wrote it)")
        if time.monotonic() > deadline:
            raise FileNotFoundError(f"task output {path} did not appear within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


class DamagedOutput(Exception):
    """A task's output cannot be merged: its EPC did not appear, or cannot be read or parsed whole,
    or its HDF5 file did not appear, cannot be read, or lacks an array its parts name, or its
    uuid_list names something that is no part of its EPC (merge.unknown_uuid)."""


class Recombiner:
    """Builds the recombined model in a staging folder beside OUT, then renames it into place.

    A task whose own output cannot be merged (its EPC cut short, a member damaged, never shown by
    the filesystem; its HDF5 file the same, or lacking an array; its uuid_list naming something
    that is no part of its EPC, on which resqpy's recombination raises) is merged not at all, never in
    part, and is left out as a failed task would be: its index and why go to `damaged`
    (take_damaged), for the caller to count it failed. Unless it was offered `rerunnable` (a
    resume's journaled result, whose task can still run in this run): then its index is not
    consumed but stays the front, later results wait for it, and it goes with why to `to_rerun`
    (take_to_rerun), for the caller to run the task again and offer its new result."""

    def __init__(self, out_epc: str | Path, consolidate: bool = True, update_existing: bool = False,
                 task_directory: str | Path | None = None, warn_damaged: bool = True):
        """task_directory: the run's (run_on_client's run_dir), where workers write group partials
        (resqmp.premerge); only partials in its groups/ folder are read, none without it.
        warn_damaged: log a warning for each task found damaged; False when the caller says it
        itself from take_damaged (the launcher: one line per task, not two)."""
        self.warn_damaged = warn_damaged
        self.out = Path(out_epc).resolve()
        self.consolidate = consolidate
        self.staging = new_staging(self.out)
        self.stage_epc = self.staging / self.out.name
        self._staging_made = False
        try:
            self.staging.mkdir(parents=True)
            self._staging_made = True
            if update_existing and self.out.is_file():
                # resqpy's function_multiprocessing adds to an existing recombined EPC
                shutil.copy2(self.out, self.stage_epc)
                if self.out.with_suffix(".h5").is_file():
                    shutil.copy2(self.out.with_suffix(".h5"), self.stage_epc.with_suffix(".h5"))
                self.model = rq.Model(epc_file=str(self.stage_epc), quiet=True)
            else:
                self.model = rq.new_model(epc_file=str(self.stage_epc), quiet=True)
            # each task's part XML goes to a file here once merged, its trees leaving memory (epc_store)
            self.merger = Merger(self.model, consolidate=consolidate, spill=self.staging / SPILL)
        except OSError as e:
            self.abort()
            raise _output_error(self.out, e) from None
        # a link at a partial's path is no partial: waited for as a name (lexists), then refused
        self.partials = PartialReader(task_directory,
                                      wait=lambda path, timeout=None: _wait_for(path, timeout, exists=os.path.lexists))
        self._pending: dict[int, tuple[str | None, list[str], str | None, bool]] = {}
        self._named: set[str] = set()        # every partial a record handed to offer() names
        self._tidied: set[str] = set()       # partials whose group's other attempts were removed
        self._next = 0
        self.seconds = 0.0
        self.damaged: dict[int, str] = {}
        # the parts every task repeats (its CRS, grid, properties), parsed once for all tasks
        self.trees = TreeCache()
        self.to_rerun: dict[int, str] = {}

    def offer(self, index: int, epc_file: str | None, uuid_list: list[str], partial: str | None = None,
              rerunnable: bool = False) -> None:
        """Accept task `index`'s result; merge every result now contiguous from the front.
        `partial`: the group partial holding the task's output (resqmp.premerge), merged from
        there when its share is found, else from epc_file. `rerunnable`: its output found damaged,
        the task is to run again rather than be left out (to_rerun): nothing after it is merged
        until it is offered again."""
        self._pending[index] = (epc_file, uuid_list, partial, rerunnable)
        if partial is not None:
            self._named.add(partial)
        while self._next in self._pending:
            epc, uuids, partial, rerunnable = self._pending.pop(self._next)
            if epc is not None:
                try:
                    # a rerunnable result is a resume's journaled one: an earlier run wrote its
                    # files, long enough ago for any filesystem to show them; not there is
                    # damaged at once (it runs again), not after APPEAR_SECONDS per such task
                    self._merge(self._next, epc, uuids, partial, appear=0 if rerunnable else None)
                except DamagedOutput as e:
                    if rerunnable:
                        # nothing of it merged (DamagedOutput): its index stays the front
                        self.to_rerun[self._next] = str(e)
                        return
                    self.damaged[self._next] = str(e)
                    if self.warn_damaged:
                        log.warning("task %d: %s; it is left out of the model, as a failed task", self._next, e)
            self._next += 1

    def take_damaged(self) -> dict[int, str]:
        """The tasks found damaged since the last call (index -> why), left out of the model."""
        damaged, self.damaged = self.damaged, {}
        return damaged

    def take_to_rerun(self) -> dict[int, str]:
        """The tasks offered `rerunnable` found damaged since the last call (index -> why): nothing
        of them merged, each to be offered again with its new result (a result offered after it
        waits for it)."""
        to_rerun, self.to_rerun = self.to_rerun, {}
        return to_rerun

    def remove_lost_attempts(self, partial: str) -> list[str]:
        """The group whose records name `partial` was sent again after a worker died holding it:
        remove the files its lost attempts left in groups/ (premerge.PartialReader.remove_other_
        attempts; never a partial any record offered so far names). Call after offer()."""
        if partial in self._tidied:
            return []
        self._tidied.add(partial)
        return self.partials.remove_other_attempts(partial, self._named)

    def skip(self, index: int) -> None:
        """A task with nothing to merge (it raised)."""
        self.offer(index, None, [])

    def _merge(self, index: int, epc: str, uuids: list[str], partial: str | None,
               appear: float | None = None) -> None:
        """appear: seconds to wait for a file not there (None: APPEAR_SECONDS; 0: looked for once)."""
        start = time.perf_counter()
        try:
            share = None
            if partial is not None:
                if partial != self.partials.path:
                    self._release_partial()      # the previous group's shares are all merged
                # waits for it (appear), in this run's groups/ only
                share = self.partials.share(partial, index, appear=appear)
            try:
                spliced = share is not None and self.merger.splice_share(share)
            except PartialUnusable as e:
                # nothing of the share stayed: it and the partial's later shares come from the tasks' own files
                log.warning("group partial %s: %s; the tasks' own files are merged instead", partial, e)
                self.merger.h5.close_input()
                self.partials.give_up(partial)
                share = None
            else:
                if share is not None and not spliced:
                    share = self.partials.with_model(share)      # None: the partial cannot give it
                    if share is not None:
                        self.merger.merge_share(share)
            if share is None:
                self._release_partial()
                try:
                    _wait_for(epc, appear)
                except FileNotFoundError as e:
                    raise DamagedOutput(str(e)) from None
                stored: dict = {}
                try:
                    # strict: a member resqpy's load would drop ("okay to continue?") would leave
                    # the task's part out of a model that looks whole
                    task_model = load_task_model(epc, raw=stored, strict=True, cache=self.trees)
                except OSError:
                    raise
                except Exception as e:   # noqa: BLE001 - cut short, not a zip, a member damaged
                    raise DamagedOutput(f"its output {epc} cannot be merged: "
                                        f"{e if isinstance(e, DamagedEPC) else f'{type(e).__name__}: {e}'}") from None
                unknown = unknown_uuid(task_model, uuids)
                if unknown is not None:
                    # resqpy's recombination raises on it, writing nothing: no content to match
                    task_model.h5_release()
                    raise DamagedOutput(f"its uuid_list names {unknown!r}, which is no part of its output {epc} "
                                        f"(a wrapper's stale or malformed uuid)")
                plain = self._check_arrays(epc, task_model, uuids, appear)
                self.merger.merge_model(task_model, uuids, stored=stored, plain=plain)
                task_model.h5_release()
        except OSError as e:
            if _is_output_failure(e):
                raise _output_error(self.out, e) from None
            raise
        self.seconds += time.perf_counter() - start

    def _check_arrays(self, epc: str, task_model, uuids: list[str], appear: float | None = None) -> set[str]:
        """Before any part of the task is merged: its HDF5 file is there and holds every array the
        merge may copy, else DamagedOutput. The copy interleaves arrays with parts, so a file cut
        short or a dataset missing used to stop it half-way: part of the task in the model and
        its arrays in the output .h5, an internal error (exit 1), on every resume again. The file
        is opened here by the copier that then reads it (its open input is kept), and each dataset
        opened here is not opened again by the copy: a healthy task pays little more. Returns the
        task's plain datasets (Merger.merge_model's `plain`)."""
        arrays = self.merger.arrays_to_copy(task_model, uuids)
        if not arrays:
            return set()         # nothing is read from its HDF5 file: neither waited for nor checked
        h5 = task_model.h5_file_name(file_must_exist=False)
        if not h5:
            raise DamagedOutput(f"its output {epc} names HDF5 arrays but no HDF5 file")
        try:
            _wait_for(h5, appear)     # written before the EPC, but a shared filesystem may show it later
        except FileNotFoundError as e:
            raise DamagedOutput(str(e)) from None
        try:
            return self.merger.h5.check_input(h5, arrays)
        except MissingDataset as e:
            problem = f"lacks the dataset {e.path} of part {arrays[e.path]} ({e.why})"
        except OSError as e:     # the task's file, opened for reading: never about OUT
            problem = f"cannot be read ({e})"
        self.merger.h5.close_input()
        raise DamagedOutput(f"its HDF5 file {h5} {problem}")

    def _release_partial(self) -> None:
        """Done with the group partial: its HDF5 file closed, its model dropped."""
        if self.partials.path is not None:
            self.merger.h5.close_input()
            self.partials.release()

    def publish(self, to: str | Path | None = None) -> Path:
        """Write the EPC and move it with its .h5 to `to` (by default OUT). A model already there is
        replaced; at no moment does that path name a half-written model, and if the move fails
        the old model is put back. Published under another name than OUT's (a partial model
        beside a kept OUT), the EPC names its own .h5."""
        target = Path(to).resolve() if to is not None else self.out
        start = time.perf_counter()
        try:
            self._release_partial()
            self.merger.forget_merge_state()      # no merge after a publish (nor after its failure)
            self.model.h5_release()
            stage_epc, h5_stage = self.stage_epc, h5_of(self.stage_epc)
            if target.name != self.out.name:
                stage_epc = self.staging / target.name
                if h5_stage.exists():
                    os.replace(h5_stage, h5_of(stage_epc))
                h5_stage = h5_of(stage_epc)
                # resqpy reads the .h5 beside the EPC; other readers follow this reference
                self.merger.serialised.change_filename_in_hdf5_rels(h5_stage.name)
                self.model.h5_dict.clear()    # its cached .h5 paths (resqpy 5.2's h5_clear_filename_cache fails)
            self.merger.store_epc(str(stage_epc))
            self.merger.close_spill()
            self.model.h5_release()
            self._move_into_place(stage_epc, h5_stage, target)
        except OSError as e:
            self.abort()
            raise _output_error(self.out, e) from None
        self.seconds += time.perf_counter() - start
        self.abort()   # removes the staging folder (and the model replaced)
        return target

    def _move_into_place(self, stage_epc: Path, h5_stage: Path, target: Path) -> None:
        """The old model (EPC first: never an old EPC with a new .h5) goes into the staging folder,
        which abort() removes; the new one comes in, EPC last. On failure the old one comes back.
        Before any rename, PUBLISHING in the staging folder says what goes where: a launcher killed
        between two renames leaves a state the next launch on OUT can undo (recover_staging)."""
        # on disk before their names replace OUT's: a node that crashes after the publish must
        # not leave OUT naming files its filesystem never wrote out, the old model gone
        _sync(stage_epc)
        if h5_stage.exists():
            _sync(h5_stage)
        _write_publishing(self.staging, target, h5_stage.exists())
        replaced = self.staging / REPLACED
        replaced.mkdir()
        moved = []
        try:
            for old in (target, h5_of(target)):
                if os.path.lexists(old):
                    os.replace(old, replaced / old.name)
                    moved.append(old)
            if h5_stage.exists():
                os.replace(h5_stage, h5_of(target))
            os.replace(stage_epc, target)
        except BaseException as e:             # an OSError, or Ctrl-C between two renames
            try:
                for old in reversed(moved):
                    os.replace(replaced / old.name, old)
            except OSError:
                self._staging_made = False      # abort() must not remove the old model with it
                reason = _OUTPUT_REASONS.get(getattr(e, "errno", None)) or getattr(e, "strerror", None) or type(e).__name__
                raise OutputError(f"output {target}: cannot write the recombined model ({reason}) nor put "
                                  f"the model that was there back: it is in {replaced}") from None
            raise
        # the renames on disk before abort() removes the model they replaced
        try:
            _sync(target.parent, folder=True)
        except OSError as e:
            log.warning("output %s: its folder could not be synced to disk (%s); the new model is in place",
                        target, e.strerror or e)

    def abort(self) -> None:
        try:
            if getattr(self, "partials", None) is not None:
                self.partials.release()
            if getattr(self, "merger", None) is not None:
                self.merger.close()
                self.merger.close_spill()
        except Exception:   # noqa: BLE001 - best effort while unwinding
            pass
        try:
            if getattr(self, "model", None) is not None:
                self.model.h5_release()
        except Exception:   # noqa: BLE001 - best effort while unwinding
            pass
        if self._staging_made:
            shutil.rmtree(self.staging, ignore_errors=True)


#: in a staging folder: where the publish moves the model it replaces (removed with the folder)
REPLACED = "replaced"
#: in a staging folder, written before the publish renames anything: {"target": the name the new
#: EPC goes to (OUT's, or its partial model's), "new_h5": whether a new .h5 goes beside it}
PUBLISHING = "publishing.json"


#: what fsync may answer on a filesystem with nothing to sync (a FUSE or special file system)
_NO_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.ENOSYS}


def _sync(path: Path, folder: bool = False) -> None:
    """`path`'s data (a folder: its names) on disk now. A filesystem that cannot sync it is taken at
    its word; any other failure is raised (the data may not be on disk)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_SYNC:
            raise
    finally:
        os.close(fd)


def _write_publishing(staging: Path, target: Path, new_h5: bool) -> None:
    fd = create_new(staging / PUBLISHING)
    with os.fdopen(fd, "w") as f:
        json.dump({"target": target.name, "new_h5": new_h5}, f)
        f.flush()
        os.fsync(f.fileno())       # on disk before the renames it describes (a node that dies)


def remove_stale_staging(out: Path) -> None:
    """OUT's staging folders left by a launcher that was killed: folders named exactly as OUT's
    (outputs.is_staging_of), never a pattern match that could reach another output's. One whose
    publish had begun (it holds REPLACED) goes through recover_staging: the model it was replacing
    is put back, or the folder is kept and said. The caller holds OUT's journal lock, so no other
    launch is writing them."""
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return
    for entry in entries:
        if is_staging_of(out, entry.name) and entry.is_dir(follow_symlinks=False):
            staging = Path(entry.path)
            if (staging / REPLACED).is_dir() and not (staging / REPLACED).is_symlink():
                recover_staging(out, staging)
            else:
                shutil.rmtree(staging, ignore_errors=True)     # an unfinished model, never published


def _publishing(staging: Path) -> dict:
    """PUBLISHING's content; {} when there is none (a folder an earlier resqmp left) or it is unreadable."""
    try:
        data = json.loads((staging / PUBLISHING).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _publish_target(out: Path, staging: Path, plan: dict) -> Path | None:
    """Where the interrupted publish was putting its model: OUT or OUT's partial model (run.py's
    _publish), by PUBLISHING, else by the names in the folder; None when that cannot be told."""
    candidates = (out, partial_path(out))
    named = [c for c in candidates if plan.get("target") == c.name]
    if not named and not plan:
        named = [c for c in candidates if any(os.path.lexists(p) for p in (
            staging / REPLACED / c.name, staging / REPLACED / h5_of(c).name, staging / c.name))]
    return named[0] if len(named) == 1 else None


def recover_staging(out: Path, staging: Path) -> None:
    """A staging folder whose publish began (it holds REPLACED) and whose launcher never finished
    it (killed, its node lost), under OUT's journal lock. Renames in the publish, in order: OUT's
    EPC, then its .h5, into REPLACED; the new .h5, then the new EPC, from the folder into place
    (Recombiner._move_into_place). So:

    - the new EPC still in the folder: the publish did not complete. With nothing at the target's
      EPC, what REPLACED holds is put back (a new .h5 already moved in goes back into the folder
      first: never the old EPC with the new .h5), one warning line says so, and the folder goes
      (what is left is an unfinished model; the journal still holds every task of it);
    - the new EPC gone from the folder: it was renamed into place, the publish completed; the model
      it replaced is removed as the publish would have, with one warning line;
    - anything else (something at OUT since the kill, a file that cannot be told old from new):
      nothing is moved or removed; one warning line names the folder and what to do.
    """
    replaced = staging / REPLACED
    plan = _publishing(staging)
    try:
        moved = set(os.listdir(replaced))
    except OSError as e:
        return _keep(out, staging, f"it cannot be read ({e.strerror})")
    target = _publish_target(out, staging, plan)
    if target is None:
        if moved:
            return _keep(out, staging, "resqmp cannot tell which model it replaced")
        shutil.rmtree(staging, ignore_errors=True)
        return
    epc, h5 = target, h5_of(target)
    strangers = sorted(moved - {epc.name, h5.name})
    if strangers:
        return _keep(epc, staging, f"it holds files resqmp did not put there ({', '.join(strangers)})")
    new_epc, new_h5 = staging / epc.name, staging / h5.name
    if not os.path.lexists(new_epc):
        # the new EPC left the folder by its rename into place: the publish completed
        if moved and not os.path.lexists(epc):
            return _keep(epc, staging, f"the model that publish put at {epc} is not there either")
        shutil.rmtree(staging, ignore_errors=True)
        if moved:
            log.warning("output %s: a launch killed just after it put its model there had left the model it "
                        "replaced in %s: removed, as that launch would have", epc, staging)
        return
    if os.path.lexists(epc):
        if moved:
            return _keep(epc, staging, f"{epc} is there again (put there since the launch was killed)")
        shutil.rmtree(staging, ignore_errors=True)       # nothing was moved yet, or all was put back
        return
    # the publish did not complete and nothing is at the target's EPC: put back what it moved
    aside = None
    if os.path.lexists(h5) and not os.path.lexists(new_h5):
        # the .h5 at the target is the new one when the publish had one to move and it is gone from
        # the folder, or the old one moved aside before it (the old .h5 is moved before the new)
        new_in_place = plan.get("new_h5")
        if new_in_place is None and h5.name in moved:
            new_in_place = True          # the old .h5 is in REPLACED: what is at its name came after
        if new_in_place is None:
            return _keep(epc, staging, f"resqmp cannot tell whether {h5} is the old model's .h5 or the new one's")
        if new_in_place:
            aside = new_h5
        elif h5.name in moved:           # neither the old .h5 (in REPLACED) nor a new one (there was none)
            return _keep(epc, staging, f"{h5} is there again (put there since the launch was killed)")
    elif os.path.lexists(h5) and h5.name in moved:
        return _keep(epc, staging, f"{h5} is there again (put there since the launch was killed)")
    try:
        if aside is not None:
            os.rename(h5, aside)
        for name in (h5.name, epc.name):         # the EPC last: never an EPC without its .h5
            if name in moved:
                os.rename(replaced / name, target.with_name(name))
    except OSError as e:
        return _keep(epc, staging, f"putting it back failed ({e.strerror})")
    if moved:
        log.warning("output %s: restored the model a killed launch had moved aside while putting its own "
                    "in place (from %s: %s)%s", epc, replaced, ", ".join(sorted(moved)),
                    f"; the new .h5 it had put at {h5} was taken back out" if aside is not None else "")
    elif aside is not None:
        log.warning("output %s: a launch killed while putting its model there had moved only its new .h5 "
                    "to %s: taken back out", epc, h5)
    shutil.rmtree(staging, ignore_errors=True)      # the unfinished model: the journal resumes it


def _keep(target: Path, staging: Path, why: str) -> None:
    """One warning line: the folder is kept, why, and what the user can do."""
    log.warning("output %s: a launch killed while putting its model in place left the model it was replacing "
                "in %s; %s, so it is kept: to have that model back, move its .epc and .h5 to %s yourself, "
                "then remove %s", target, staging / REPLACED, why, target.parent, staging)


# errno -> what the user reads: the causes that are about OUT's filesystem, not a bug
_OUTPUT_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


def _is_output_failure(e: OSError) -> bool:
    """Disk full, quota, read-only, permission; h5py reports HDF5 write failures as OSError
    without an errno, naming the cause in the message."""
    if e.errno in _OUTPUT_REASONS:
        return True
    text = str(e).lower()
    return e.errno is None and ("no space left" in text or "quota exceeded" in text)


def _output_error(out: Path, e: OSError) -> OutputError:
    reason = _OUTPUT_REASONS.get(e.errno, e.strerror)
    return OutputError(f"output {out}: cannot write the recombined model ({reason}); nothing was written at OUT")
