"""In the launcher: a task's share of a group partial merged from its worker's plan (resqmp.
splice_plan) — every assumption of the plan checked against the recombined model first, then its
parts, relationships and arrays added as they are, with no part parsed, copied or serialised.

What the plan assumed, and what is checked here before anything is changed:

* each of the task's parts it took as there (the batch's grid and CRS...) is there, under that
  name; each it took as not there is not, by name or uuid, nor mapped by consolidation;
* each consolidation query its merge made would find nothing here either: no resident of that
  type shares the query's key (two parts with different keys are never equivalent,
  resqmp.consolidate), so resqpy's first-equivalent search has no candidate;
* the resident parts it adds relationships to are there, with rels parts; the HDF5 paths it
  copies are not in the output yet; the output has its HDF5 external part.

Each HDF5 group the plan names ("h5_groups") is copied whole, in one call, when the partial's
file shows it holds only the plan's datasets there, all plain, and the output lacks it;
otherwise its datasets are copied one by one. Either way the output gets exactly the plan's
datasets, as stored.

When all hold, resqpy's copy would add exactly the plan's parts, in its order, with the plan's
XML (the shadow's HDF5 proxy uuid replaced by ours), and the relationships the plan lists to the
residents' rels parts (each still subject to our own duplicate check, as in resqpy). When one
does not, nothing was changed and the share is merged by resqmp.merge as before.
"""
from __future__ import annotations

import logging
import re
from collections import Counter

import resqpy.olio.uuid as bu
import resqpy.olio.xml_et as rqet

from resqmp.consolidate import CONSOLIDATABLE, IndexedConsolidation
from resqmp.h5_copy import H5Copier, _h5_key
from resqmp.merge import _EXT
from resqmp.relationships import _id_str
from resqmp.splice_plan import VERSIONS, checksum
from resqmp.task_model import _relate

log = logging.getLogger(__name__)


class Declined(Exception):
    """The plan does not apply to the recombined model as it is (why)."""


class PartialUnusable(Exception):
    """A copy from the partial's HDF5 file failed (why): what the share's copy had made in the
    output was removed again, nothing else of the share was changed; the partial is not to be
    read any more (its other shares' arrays may fail too)."""


class Splicer:
    """Applies plans to a Merger's model (resqmp.merge.Merger, consolidating, with a spill file)."""

    def __init__(self, merger):
        self.merger = merger
        self.spliced = 0                 # shares merged from their plan (for tests and bench)
        self.declined: Counter = Counter()   # why a plan was not applied -> how often

    def splice(self, plan, partial_h5: str, plain, tree=None) -> bool:
        """Merge the share from `plan`; False (nothing changed) when the plan does not apply.
        `tree`: what the partial's HDF5 file holds (resqmp.h5_copy.H5Tree; None: no group copies)."""
        try:
            checked = self._check(plan, plain, tree)
        except Declined as e:
            self.declined[str(e)] += 1
            log.debug("splice plan declined: %s", e)
            return False
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
            self.declined["malformed plan"] += 1
            log.debug("splice plan malformed: %s: %s", type(e).__name__, e)
            return False
        self._apply(checked, partial_h5, plain)
        self.spliced += 1
        return True

    def _check(self, plan, plain=frozenset(), tree=None) -> tuple:
        merger = self.merger
        model = merger.model
        if not isinstance(plan, dict) or plan.get("version") not in VERSIONS:
            raise Declined("not a plan of this version")
        if plan.get("crc") != checksum(plan):
            raise Declined("a plan damaged (its CRC differs)")
        if not _well_typed(plan):
            raise Declined("a plan value of an unexpected type")
        consolidation = model.consolidation
        if not merger.consolidate or not isinstance(consolidation, IndexedConsolidation) or consolidation.in_progress:
            raise Declined("not a consolidating merge")
        if merger.serialised.spill is None or not model.rels_present:
            raise Declined("no spill file")
        forest, by_uuid = model.parts_forest, model.uuid_part_dict
        for part in plan["present"]:
            if by_uuid.get(_uuid_int(part)) != part:
                raise Declined("a part taken as there is not")
        for part in plan["absent"]:
            uuid_int = _uuid_int(part)
            if part in forest or uuid_int in by_uuid or uuid_int in consolidation.map:
                raise Declined("a part taken as not there is")
        if plan["queries"]:
            consolidation._catch_up()
            for obj_type, key in plan["queries"]:
                index = consolidation._type_index(str(obj_type))
                if index.entries and (not index.keyed or index.candidates(_key(key))):
                    raise Declined("a resident may be equivalent")
        shadow_proxy = str(bu.uuid_from_string(plan["proxy"]))
        h5_uuid = model.h5_uuid()
        ext_part = rqet.part_name_for_object(_EXT, h5_uuid, prefixed=False) if h5_uuid is not None else None
        if ext_part is None or ext_part not in forest or rqet.rels_part_name_for_part(ext_part) not in model.rels_forest:
            raise Declined("no HDF5 external part yet")
        ours = str(h5_uuid)
        # a relationship's Id is the uuid, '_'-prefixed when it starts with a digit (resqpy's
        # fesapi quirk): the one to the HDF5 proxy takes our proxy's form, not the shadow's
        proxy_id = (f'Id="{_id_str(shadow_proxy)}"', f'Id="{_id_str(ours)}"')
        new = []
        names = set()
        for content_type, uuid_str, xml, rels, refs, key in plan["new"]:
            uuid = bu.uuid_from_string(uuid_str)
            if not isinstance(content_type, str) or not content_type.startswith("obj_") or content_type == _EXT:
                raise Declined("a new part of no object type")
            name = rqet.part_name_for_object(content_type, uuid, prefixed=False)
            if name in forest or uuid.int in by_uuid or name in names:
                raise Declined("a new part is there")
            names.add(name)
            new.append((name, content_type, uuid, xml.replace(shadow_proxy, ours).encode(),
                        rels.replace(*proxy_id).replace(shadow_proxy, ours).encode(),
                        [_int(r) for r in refs], None if key is None else _key(key)))
        shadow_ext = rqet.part_name_for_object(_EXT, shadow_proxy, prefixed=False)
        appends = []
        for resident, rel_id, rel_type, target, avoid in plan["appends"]:
            if resident == shadow_ext:
                resident = ext_part
            elif resident not in forest:
                raise Declined("a relationship to a part not there")
            if target not in names or _int(rel_id) != _uuid_int(target):
                raise Declined("a relationship to no new part")
            rels_name = rqet.rels_part_name_for_part(resident)
            if rels_name not in model.rels_forest:
                raise Declined("a resident without rels part")
            appends.append((rels_name, str(rel_id), str(rel_type), target, bool(avoid)))
        paths = plan["h5"]
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise Declined("an HDF5 path of no string")
        groups = {}
        if paths:
            self_h5 = model.h5_file_name(file_must_exist=False)
            existing = merger.h5.out_paths(self_h5)
            keys = [_h5_key(p) for p in paths]
            if len(set(keys)) != len(keys) or any(k in existing for k in keys):
                raise Declined("an HDF5 path is there")
            if tree is not None and H5Copier.copies_as_stored():
                groups = _whole(plan.get("h5_groups") or [], paths, keys, plain, tree, existing)
        return new, appends, paths, groups

    def _apply(self, checked, partial_h5: str, plain) -> None:
        new, appends, paths, groups = checked
        merger = self.merger
        model = merger.model
        if paths:
            self._copy(partial_h5, model.h5_file_name(file_must_exist=False), paths, groups, plain)
        rels_dict = model.uuid_rels_dict
        hints = model.consolidation.key_hints
        for name, content_type, uuid, xml, rels, refs, key in new:
            merger.serialised.add_part(name, content_type, uuid, xml, rels)
            if rels_dict.get(uuid.int) is None:
                rels_dict[uuid.int] = (set(), set(), set())
            _relate(model, uuid.int, refs)
            if key is not None:
                hints[uuid.int] = key
        relationships = merger.relationships
        for rels_name, rel_id, rel_type, target, avoid in appends:
            root = model.rels_forest[rels_name][1].getroot()
            if not avoid or not relationships._has_target(rels_name, root, target):
                relationships._add(rels_name, root, rel_id, rel_type, target)
        merger._task_done()

    def _copy(self, partial_h5: str, out: str, paths: list[str], groups: dict, plain) -> None:
        """The share's arrays, copied before anything else of it: a copy that fails (the partial's
        file damaged where the check before could not see it) takes back what this share's
        copies made in the output and raises PartialUnusable, so the share is merged from
        elsewhere, whole. A failure to write the output (disk full...) is raised as it is."""
        h5 = self.merger.h5
        h5.added, counts = [], (h5.datasets, h5.groups)
        try:
            if groups:
                h5.copy_groups(partial_h5, out, groups)
                in_groups = {p for group in groups.values() for p in group}
                paths = [p for p in paths if p not in in_groups]
            if paths:
                h5.copy_paths(partial_h5, out, paths, plain)
        except Exception as e:   # noqa: BLE001 - whatever HDF5 raised, the share must not stay half-copied
            h5.undo(h5.added)
            h5.datasets, h5.groups = counts
            if isinstance(e, OSError) and _writing_failed(e):
                raise
            raise PartialUnusable(f"{h5.copying} of its HDF5 file cannot be copied ({type(e).__name__}: {e})") from e
        finally:
            h5.added = None


def _writing_failed(e: OSError) -> bool:
    from resqmp.recombine import _is_output_failure
    return _is_output_failure(e)


#: a uuid as resqpy writes it in part names and references (the common case, read without uuid.UUID)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _whole(named, paths: list[str], keys: list[str], plain, tree, existing) -> dict[str, list[str]]:
    """The plan's groups (`named`) to copy whole: group -> the plan's paths under it, for each
    that the partial's `tree` shows holds only those, all `plain`, none the output's (`existing`)
    and no other group's. A group that does not qualify is left out: its datasets are copied one
    by one, as every path of a plan without groups."""
    groups: dict[str, list[str]] = {}
    taken: set[str] = set()
    for group in named:
        key = _h5_key(group)
        if not key or key in existing:
            continue
        prefix = key + "/"
        mine = [(p, k) for p, k in zip(paths, keys) if k.startswith(prefix)]
        if not mine or any(k in taken or k not in plain for _, k in mine):
            continue
        if tree.holds_only(key, [k for _, k in mine]):
            groups["/" + key] = [p for p, _ in mine]
            taken.update(k for _, k in mine)
    return groups


def _strs(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_key(key) -> bool:
    """A consolidation key as resqmp.splice_plan._key writes it: a list of scalars, no NaN."""
    return isinstance(key, list) and len(key) > 0 and all(
        v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and v == v) for v in key)


def _well_typed(plan: dict) -> bool:
    """Is every value of `plan` of the JSON type resqmp.splice_plan writes there? Values the
    launcher would otherwise coerce (str(), bool()) into OUT's XML, or file as a resident's key,
    or hash long after the plan was applied."""
    if not (isinstance(plan.get("proxy"), str) and _strs(plan.get("present")) and _strs(plan.get("absent"))
            and isinstance(plan.get("new"), list) and isinstance(plan.get("appends"), list)
            and isinstance(plan.get("queries"), list) and _strs(plan.get("h5"))
            and _strs(plan.get("h5_groups", []))):
        return False
    for entry in plan["new"]:
        if not (isinstance(entry, list) and len(entry) == 6 and all(isinstance(v, str) for v in entry[:4])
                and _strs(entry[4]) and (entry[5] is None or (_is_key(entry[5]) and entry[0][4:] in CONSOLIDATABLE))):
            return False
    for entry in plan["appends"]:
        if not (isinstance(entry, list) and len(entry) == 5 and all(isinstance(v, str) for v in entry[:4])
                and isinstance(entry[4], bool)):
            return False
    for entry in plan["queries"]:
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in CONSOLIDATABLE and _is_key(entry[1])):
            return False
    return True


def _int(uuid_str: str) -> int:
    """bu.uuid_from_string(uuid_str).int for a uuid string; ValueError if it is none."""
    if not isinstance(uuid_str, str):
        raise ValueError(f"not a uuid: {uuid_str!r}")
    if _UUID.fullmatch(uuid_str):
        return int(uuid_str.replace("-", ""), 16)
    uuid = bu.uuid_from_string(uuid_str)
    if uuid is None:
        raise ValueError(f"not a uuid: {uuid_str!r}")
    return uuid.int


def _key(key) -> tuple:
    """A consolidation key from a plan (_is_key) as a tuple; ValueError for anything else: a
    resident filed by it is hashed and compared later, long after the plan was applied."""
    if not _is_key(key):
        raise ValueError(f"not a consolidation key: {key!r}")
    return tuple(key)


_PART_INTS: dict[str, int] = {}      # the part names every plan repeats (the batch's grid, CRS...)


def _uuid_int(part) -> int:
    """The uuid int of a part name, as rqet.uuid_in_part_name reads it."""
    found = _PART_INTS.get(part) if isinstance(part, str) else None
    if found is not None:
        return found
    if not isinstance(part, str) or not part.endswith(".xml") or len(part) < 40:
        raise ValueError(f"no uuid in part name {part!r}")
    found = _int(part[-40:-4])
    if len(_PART_INTS) >= 4096:
        _PART_INTS.clear()
    _PART_INTS[part] = found
    return found
