"""Group partials: a worker gathers its group's task outputs into one EPC + HDF5 file, so the
launcher opens one model and one HDF5 file per group instead of one per task.

The partial is the union of the group's task models, copied with resqmp.merge.Merger without
consolidation: every part keeps its uuid and its XML (HDF5 references aside), and its arrays sit
in the partial's HDF5 file. Consolidation stays in the launcher, task by task, so its decisions
are resqpy's flat ones: consolidating in two levels (within the group, then against the
recombined model) reaches equivalent parts too, but a reference rewritten in the partial turns
into a relationship added at another step of resqpy's copy, so the order of relationships in a
rels part could differ from resqpy's (issue 11, wave 3). Beside the partial, a manifest gives each task's
share: its uuids in resqpy's consolidation order and, for every uuid of the task model, its
related parts in the task's own part order (all that the merge reads from a task model besides
parts and arrays); and which of the partial's datasets are plain (copied as stored, so the launcher
copies them without opening each to check). Merger.merge_share copies a share exactly as
merge_model copies the task model, and takes the XML of a part it copies unchanged from the
partial's stored bytes instead of serialising it again.

Each attempt of a group writes files of its own (a random token in the name): a group sent again
after its worker died never reuses a lost attempt's files, and only the partial named in the
records that came back is ever merged. Partials live in the run's task directory, removed with it.
"""
from __future__ import annotations

import json
import logging
import os
import uuid as uuid_mod
from dataclasses import dataclass
from pathlib import Path

import resqpy.model as rq
import resqpy.model._catalogue as m_c
import resqpy.olio.consolidation as cons
import resqpy.olio.uuid as bu

from resqmp.merge import Merger
from resqmp.outputs import h5_of
from resqmp.task_model import load_task_model

log = logging.getLogger(__name__)

#: the partials' folder inside the run's task directory
FOLDER = "groups"


def manifest_of(epc: str | Path) -> Path:
    return Path(epc).with_suffix(".json")


def premerge_group(records: list[dict], run_dir: str) -> None:
    """On the worker, after the group ran: gather the successful tasks' outputs into one partial
    and name it in their records ("partial"). Fewer than two: nothing to gain, nothing written.
    Any failure leaves the records as they were: the launcher then merges each task's own file."""
    shares = [r for r in records if r.get("success") and r.get("epc_file")]
    if len(shares) < 2:
        return
    folder = Path(run_dir) / FOLDER
    epc = folder / f"g{shares[0]['index']:07d}-{shares[-1]['index']:07d}-{uuid_mod.uuid4().hex[:12]}.epc"
    try:
        folder.mkdir(exist_ok=True)
        _write(shares, epc)
    except Exception as e:   # noqa: BLE001 - an optimisation: the launcher merges task files instead
        log.warning("group partial %s not written (%s: %s); the launcher merges the tasks' own files",
                    epc.name, type(e).__name__, e)
        for path in (epc, h5_of(epc), manifest_of(epc)):
            path.unlink(missing_ok=True)
        return
    for r in shares:
        r["partial"] = str(epc)


def _write(shares: list[dict], epc: Path) -> None:
    model = rq.new_model(str(epc), quiet=True)
    merger = Merger(model, consolidate=False)
    merger.h5.plain = set()              # listed in the manifest: the launcher need not check them
    manifest: dict = {"tasks": {}}
    try:
        for r in shares:
            task = load_task_model(r["epc_file"])
            try:
                manifest["tasks"][str(r["index"])] = _share(task, r["uuid_list"])
                # every part, not only the share's: the launcher's consolidation may read any
                # part the task model holds (a related part's object), as it reads the task model
                merger.merge_model(task, task.uuids())
            finally:
                task.h5_release()
        merger.close()
        merger.store_epc(str(epc))
        manifest["plain"] = sorted(merger.h5.plain)      # the launcher copies these without checking
    finally:
        merger.close()
        model.h5_release()
    tmp = manifest_of(epc).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_of(epc))     # present only complete


def _share(task, uuid_list: list[str]) -> dict:
    """What Merger.merge_model reads from the task model besides parts and arrays."""
    if not task.rels_present:
        raise ValueError("task model without relationships")      # resqpy's merge fails on it too
    ordered = cons.sort_uuids_list(task, uuid_list)
    if ordered is None:
        ordered = task.uuids()
    parts = m_c._list_of_parts(task)
    related = {}
    for uuid_int in task.uuid_rels_dict:
        found = m_c._parts_list_filtered_by_related_uuid(task, parts, bu.uuid_from_int(uuid_int))
        if found:
            related[str(bu.uuid_from_int(uuid_int))] = found
    return {"uuids": [str(u) for u in ordered], "related": related}


def _read_manifest(path: Path) -> dict | None:
    """The manifest as premerge_group writes it, or None (absent, cut short, edited: the launcher
    then merges the tasks' own files, which a partial never replaces). Absent is no news: on a
    shared filesystem that lags it may not be seen yet."""
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if isinstance(manifest, dict) and isinstance(manifest["tasks"], dict) and isinstance(manifest["plain"], list):
            return manifest
    except (OSError, ValueError, KeyError):
        pass
    log.warning("group partial manifest %s unreadable: the tasks' own files are merged instead", path)
    return None


@dataclass
class Share:
    """One task's share of a group partial, as Merger.merge_share reads it."""
    model: object                        # the partial's model
    uuids: list[str]                     # the task's uuids, in resqpy's consolidation order
    related: dict[int, list[str]]        # uuid int -> related parts, in the task's part order
    stored: dict                         # the partial's members as stored (its parts' XML)
    proxy: str                           # the partial's HDF5 proxy uuid, in that XML
    plain: set[str]                      # the partial's plain datasets (resqmp.h5_copy)


class PartialReader:
    """The launcher's side: one group partial open at a time (a group's shares merge one after
    the other), its model loaded once."""

    def __init__(self):
        self.path: str | None = None
        self.model = None
        self._manifest: dict = {}
        self._stored: dict = {}          # the partial's members as stored: its parts' XML
        self._proxy = ""
        self._plain: set[str] = set()

    def share(self, epc: str, index: int) -> Share | None:
        """Task `index`'s share of the partial `epc`, or None when the partial or the task's share
        in it is not there (the task's own file is merged then)."""
        if epc != self.path:
            self.release()
            manifest = _read_manifest(manifest_of(epc)) if os.path.exists(epc) else None
            if manifest is None:
                return None
            self._manifest = manifest
            self._stored = {}
            self.model = load_task_model(epc, raw=self._stored)
            self._proxy = str(self.model.h5_uuid())
            self._plain = set(self._manifest["plain"])
            self.path = epc
        try:
            entry = self._manifest["tasks"][str(index)]
            related = {bu.uuid_from_string(u).int: list(parts) for u, parts in entry["related"].items()}
            uuids = [str(u) for u in entry["uuids"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            return None               # not this task's share as premerge_group writes it
        return Share(self.model, uuids, related, self._stored, self._proxy, self._plain)

    def release(self) -> None:
        if self.model is not None:
            self.model.h5_release()
        self.path, self.model, self._manifest, self._stored, self._plain = None, None, {}, {}, set()
