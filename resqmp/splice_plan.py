"""On the worker: what the launcher's merge of each task of a group will do, recorded as a plan
the launcher applies with dictionary lookups and byte copies instead of resqpy objects.

The launcher's merge (resqmp.merge.Merger, resqpy's copy algorithm) of one task reads the
recombined model in a few places only: which of the task's parts are there already, what
consolidation finds equivalent, which relationships a resident's rels part holds, which HDF5
paths the output holds. Everything else it does is a function of the task's own output. So the
worker runs that same merge, task after task, into a *shadow* model holding what the launcher's
model will hold of the group's concern at that point: the parts the group's tasks repeat (the
batch's grid, CRS, properties: the first group's first task copied them into the launcher's
model long before), then the group's earlier tasks. It records the outcome:

* the parts the merge adds, in order, with their XML and rels XML as the launcher would
  serialise them (the HDF5 proxy's uuid a placeholder: the shadow's own, replaced by the
  launcher's), and the uuids each refers to;
* the relationships it adds to parts that were there before (appended by the launcher, whose
  own duplicate check decides, as resqpy's does);
* the HDF5 paths it copies, in order, and the groups of the partial's HDF5 file that hold only
  some of them (each copied whole by the launcher, in one call: resqmp.h5_copy.whole_groups);
* what it assumed: which of the task's parts were there and which were not, and each
  consolidation query with the key two equivalent parts must share (resqmp.consolidate) — all
  of which found nothing.

A task whose merge consolidated anything, or did what a plan cannot say, gets no plan. The
launcher (resqmp.splice) applies a plan only after checking every assumption against its own
model; otherwise it merges the task's share as before. A plan never decides anything the
launcher did not check: it saves the launcher the work, not the judgement.
"""
from __future__ import annotations

import json
import logging
import zlib
from collections import Counter

import resqpy.model as rq
import resqpy.model._catalogue as m_c
import resqpy.olio.uuid as bu

from resqmp.consolidate import CONSOLIDATABLE, IndexedConsolidation, _construct, _hashable_key, xml_key
from resqmp.h5_copy import whole_groups
from resqmp.merge import _EXT, Merger
from resqmp.relationships import RelationshipIndex
from resqmp.task_model import _references

log = logging.getLogger(__name__)

#: the plan format (2: with its "crc"; 3: with "h5_groups"; 4: the CRC reads the XML as it is);
#: the launcher applies VERSIONS
VERSION = 4
VERSIONS = (2, 3, 4)


def checksum(plan: dict) -> int:
    """CRC-32 of `plan` less its "crc". The plan's XML and relationships go into OUT as they are,
    unparsed: a byte of the manifest changed where JSON still reads must not (the partial's EPC
    members have their CRC in its zip; the manifest has none). Up to version 3: the plan as
    canonical JSON (what json.loads of the manifest gives back dumps to the same text). From 4:
    the new parts' XML and rels texts (most of a plan's bytes) as UTF-8, after the rest as
    canonical JSON with [length] in their place: as exact, and 5× cheaper than encoding them as
    JSON again (50 µs a find-faces plan, a twentieth of the launcher's whole merge of it)."""
    rest = {k: v for k, v in plan.items() if k != "crc"}
    if plan.get("version") in (2, 3):
        return zlib.crc32(json.dumps(rest, sort_keys=True).encode())
    texts = []
    if isinstance(rest.get("new"), list):
        skeleton = []
        for entry in rest["new"]:
            if isinstance(entry, list) and len(entry) == 6 and isinstance(entry[2], str) and isinstance(entry[3], str):
                texts += entry[2:4]
                entry = [entry[0], entry[1], [len(entry[2])], [len(entry[3])], *entry[4:]]
            skeleton.append(entry)
        rest["new"] = skeleton
    crc = zlib.crc32(json.dumps(rest, sort_keys=True).encode())
    for text in texts:
        crc = zlib.crc32(text.encode("utf-8", "surrogatepass"), crc)
    return crc


class _Recording:
    """What one task's merge into the shadow did that the launcher must redo or check."""

    def __init__(self, before: set[int]):
        self.before = before            # uuid ints in the shadow when the task's merge began
        self.appends: list[list] = []   # [resident part, Id, relationship type, target part, avoid duplicates]
        self.queries: list[tuple] = []  # (part, immigrant model, answer)
        self.paths: list[str] = []      # HDF5 paths copied, in order
        self.why_not: str | None = None  # set when the task's merge cannot be a plan


class _ShadowConsolidation(IndexedConsolidation):
    recording: _Recording | None = None

    def equivalent_uuid_int_for_part(self, part, immigrant_model=None, ignore_identical_part=False):
        answer = super().equivalent_uuid_int_for_part(part, immigrant_model=immigrant_model,
                                                      ignore_identical_part=ignore_identical_part)
        if self.recording is not None:
            self.recording.queries.append((part, immigrant_model, answer))
        return answer


class _ShadowRelationships(RelationshipIndex):
    recording: _Recording | None = None

    def reciprocal(self, node_a, rel_type_a, node_b, rel_type_b, avoid_duplicates=True):
        rec = self.recording
        if rec is not None and node_a is not None and node_b is not None:
            uuid_a, part_a, _, _ = self._rels_for(node_a)
            uuid_b, part_b, _, _ = self._rels_for(node_b)
            a_there = bu.uuid_from_string(uuid_a).int in rec.before
            b_there = bu.uuid_from_string(uuid_b).int in rec.before
            if a_there and b_there:
                rec.why_not = "a relationship between two parts already there"
            elif a_there:
                rec.appends.append([part_a, uuid_b, rel_type_a, part_b, avoid_duplicates])
            elif b_there:
                rec.appends.append([part_b, uuid_a, rel_type_b, part_a, avoid_duplicates])
        super().reciprocal(node_a, rel_type_a, node_b, rel_type_b, avoid_duplicates=avoid_duplicates)


class _ShadowH5:
    """Stands in for resqmp.h5_copy.H5Copier: nothing is read or written, the paths are recorded."""

    datasets = 0
    plain = None

    def __init__(self):
        self.existing: set[str] = set()
        self.recording: _Recording | None = None

    def copy_paths(self, file_in, file_out, paths, plain=frozenset()) -> int:
        count = 0
        for path in paths:
            key = '/'.join(w for w in path.split('/') if w)
            if key in self.existing:
                if self.recording is not None:
                    self.recording.why_not = f"HDF5 path {path} copied twice"
                continue
            self.existing.add(key)
            if self.recording is not None:
                self.recording.paths.append(path)
            count += 1
        return count

    def close_input(self) -> None:
        pass

    def close(self) -> None:
        pass


def _key(model, part) -> list | None:
    """The consolidation key of `part` of `model` (resqmp.consolidate), as JSON; None if unknown."""
    obj_type = model.type_of_part(part, strip_obj=True)
    if obj_type is None or obj_type not in CONSOLIDATABLE:
        return None
    uuid = model.uuid_for_part(part)
    key = xml_key(obj_type, model.root_for_part(part))
    if key is None:
        key = _hashable_key(obj_type, _construct(model, obj_type, uuid))
    if key is None or not all(v is None or isinstance(v, (str, bool, int, float)) for v in key):
        return None
    return list(key)


def plan_group(tasks: list[tuple], name: str, partial: tuple | None = None) -> dict[int, dict]:
    """Plans for the tasks of one group, in task order: (index, task model, uuid_list, its EPC's
    members as stored or None) each, every uuid_list naming only parts of its model. Returns
    index -> plan for the tasks that have one. `name`: the shadow model's EPC name, never written
    nor read (resqpy's new_model would delete a file there: the model is made without it).
    `partial`: (H5Tree, plain keys) of the group partial's HDF5 file, for the plans' "h5_groups"."""
    shadow = rq.Model(new_epc=True, create_basics=True, create_hdf5_ext=False, quiet=True)
    shadow.set_epc_file_and_directory(name)
    # so the merge never creates it: the launcher's exists (its name is never opened either)
    shadow.create_hdf5_ext(add_as_part=True, file_name=name[:-4] + ".h5" if name.endswith(".epc") else name + ".h5")
    proxy = str(shadow.h5_uuid())
    merger = Merger(shadow, consolidate=True)
    consolidation = _ShadowConsolidation(shadow)
    shadow.consolidation = consolidation
    relationships = _ShadowRelationships(shadow, on_change=merger.serialised.rels_changed)
    merger.relationships = relationships
    h5 = _ShadowH5()
    merger.h5 = h5

    # the parts the group's tasks repeat are in the launcher's model before any of them merges
    # (an earlier group brought them; for the very first group the launcher finds it otherwise
    # and merges that share without its plan)
    counts = Counter()
    for _, task, *_ in tasks:
        counts.update({uuid_int for uuid_int in task.uuid_part_dict})
    for _, task, *_ in tasks:
        for uuid_int, part in list(task.uuid_part_dict.items()):
            if counts[uuid_int] > 1 and part not in shadow.parts_forest and m_c._type_of_part(task, part) != _EXT:
                merger.copy_part(task, part)
    merger._task_done()

    plans = {}
    for index, task, uuids, *stored in tasks:
        rec = _Recording(set(shadow.uuid_part_dict))
        n0 = len(shadow.parts_forest)
        map0 = len(consolidation.map)
        consolidation.recording = relationships.recording = h5.recording = rec
        try:
            # stored: a part copied unchanged takes its task's bytes (proxy replaced), as the
            # launcher's merge_model does, instead of being serialised again
            merger.merge_model(task, uuids, stored=stored[0] if stored else None)
        finally:
            consolidation.recording = relationships.recording = h5.recording = None
        plan = _plan(shadow, merger, task, rec, n0, map0, proxy)
        if isinstance(plan, dict):
            plan["h5_groups"] = list(whole_groups(rec.paths, *partial)) if partial is not None else []
            plan["crc"] = checksum(plan)
            plans[index] = plan
        else:
            log.debug("task %d: no splice plan (%s)", index, plan)
    return plans


def _plan(shadow, merger, task, rec: _Recording, n0: int, map0: int, proxy: str) -> dict | str:
    """The plan of one task's merge just recorded, or why there is none."""
    if rec.why_not is not None:
        return rec.why_not
    if len(shadow.consolidation.map) != map0:
        return "consolidation found an equivalent part"
    queries = []
    for part, immigrant, answer in rec.queries:
        if answer is not None:
            return "consolidation found an equivalent part"
        obj_type = immigrant.type_of_part(part, strip_obj=True)
        if obj_type is None or obj_type not in CONSOLIDATABLE:
            continue               # such a query finds nothing, whatever the model holds
        key = _key(immigrant, part)
        if key is None:
            return f"no consolidation key for {part}"
        queries.append([obj_type, key])
    present, absent = [], []
    for uuid_int, part in task.uuid_part_dict.items():
        if m_c._type_of_part(task, part) == _EXT:
            continue
        (present if uuid_int in rec.before else absent).append(part)
    new = []
    forest = shadow.parts_forest
    for name in list(forest)[n0:]:
        content_type, uuid, _ = forest[name]
        if content_type == _EXT:
            return "a new HDF5 external part"
        xml = merger.serialised._xml.get(name)
        rels = merger.serialised._rels.get(_rels_name(name))
        if not isinstance(xml, bytes) or rels is None or not isinstance(rels[1], bytes):
            return f"part {name} not serialised"
        refs = [str(bu.uuid_from_int(u)) for u in _references(forest[name][2].getroot())]
        key = _key(shadow, name)
        new.append([content_type, str(uuid), xml.decode(), rels[1].decode(), refs, key])
    return {"version": VERSION, "proxy": proxy, "present": present, "absent": absent, "new": new,
            "appends": rec.appends, "queries": queries, "h5": rec.paths}


def _rels_name(part: str) -> str:
    return f"_rels/{part}.rels"
