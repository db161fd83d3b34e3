"""Consolidation with the same decisions as resqpy's, at a cost linear in the number of residents.

resqpy's ``Consolidation.equivalent_uuid_int_for_part`` decides, for an immigrant part of a
consolidatable type (features, interpretations, CRSs, time series, string tables, property kinds),
which resident part it is equivalent to: the first resident of the same type, in the model's part
order, for which ``immigrant_obj == resident_obj`` (the class's ``is_equivalent``). It constructs a
resqpy object for every resident of the type at every query, so merging N task outputs that each
bring a new fault interpretation and feature costs O(N²) object constructions.

``IndexedConsolidation`` makes the same decisions:

* each resident is filed under a *key*: a tuple of attributes that ``is_equivalent`` requires to
  be equal (e.g. the feature name for features, the citation title for interpretations). Two
  objects with different keys are never equivalent, so only residents with the immigrant's key
  are compared, still in model order and still with ``==``: the first match is the one resqpy
  finds;
* for features and interpretations the key is the citation title, read straight from the part's
  XML (``xml_key``), so no resqpy object is built, resident or immigrant, until two parts share a
  key; a resident's object, once built, is kept (its XML no longer changes once copied). Other
  types (CRSs, time series, string tables, property kinds) are keyed from their objects;
* the ``map`` of immigrant to resident uuids is kept exactly as resqpy keeps it (it is consulted
  first, and ``_copy_referenced_parts`` reads it);
* residents are picked up incrementally from ``model.object_parts`` (insertion ordered), so no
  query scans the whole model.

Where resqpy would fail (an immigrant or resident whose object cannot be built), this fails
only when that object is needed for a comparison: on input resqpy can recombine, the decisions
are the same.

A part still being copied (its references not yet remapped) is never cached: when one of the
queried type is in progress, the query falls back to resqpy's own full scan. The copy engine
(resqmp.merge) marks parts in progress.
"""
from __future__ import annotations

import itertools
import logging
import math

import resqpy.crs as rqc
import resqpy.olio.consolidation as cons
import resqpy.olio.uuid as bu
import resqpy.olio.xml_et as rqet
import resqpy.organize as rqo
import resqpy.property as rqp
import resqpy.time_series as rqt

log = logging.getLogger(__name__)

CONSOLIDATABLE = frozenset(cons.consolidatable_list)


def _construct(model, obj_type: str, uuid):
    """The object resqpy's Consolidation builds for a part of obj_type (same classes, same order)."""
    if obj_type.endswith('Interpretation') or obj_type.endswith('Feature'):
        return rqo.__dict__[obj_type](model, uuid=uuid)
    if obj_type.endswith('Crs'):
        return rqc.Crs(model, uuid=uuid)
    if obj_type == 'TimeSeries':
        return rqt.TimeSeries(model, uuid=uuid)
    if obj_type == 'StringTableLookup':
        return rqp.StringLookup(model, uuid=uuid)
    if obj_type == 'PropertyKind':
        return rqp.PropertyKind(model, uuid=uuid)
    raise Exception('code failure')


def _title_of_root(obj):
    root = obj.root
    return (root is None, None if root is None else rqet.citation_title_for_node(root))


def equivalence_key(obj_type: str, obj) -> tuple:
    """Attributes that `is_equivalent` of obj_type compares for exact equality (distinct uuids).

    Read off resqpy 5.2's is_equivalent methods:
      features: feature_name ==;  FaultInterpretation, WellboreInterpretation: title ==;
      Earth model / horizon / geobody (boundary) interpretations: citation title of root ==
      (when both roots exist, and both roots exist or neither);
      Crs: resqml_type, xy_units, z_units, z_inc_down, time_units, axis_order ==;
      TimeSeries: number of timestamps, timeframe ==;  StringTableLookup: title, min/max index ==;
      PropertyKind: parent_kind, title, is_abstract, naming_system ==.
    """
    if obj_type.endswith('Feature'):
        return (obj.feature_name,)
    if obj_type in ('FaultInterpretation', 'WellboreInterpretation'):
        return (obj.title,)
    if obj_type.endswith('Interpretation'):
        return _title_of_root(obj)
    if obj_type.endswith('Crs'):
        return (obj.resqml_type, obj.xy_units, obj.z_units, obj.z_inc_down, obj.time_units, obj.axis_order)
    if obj_type == 'TimeSeries':
        return (obj.number_of_timestamps(), obj.timeframe)
    if obj_type == 'StringTableLookup':
        return (obj.title, obj.min_index, obj.max_index)
    if obj_type == 'PropertyKind':
        return (obj.parent_kind, obj.title, obj.is_abstract, obj.naming_system)
    return ()


def xml_key(obj_type: str, root) -> tuple | None:
    """equivalence_key(obj_type, obj) read from the part's XML root without building the object:
    for features (feature_name is the citation title) and interpretations (title, or the
    citation title of the root); None for other types, whose key needs the object."""
    if root is None:
        return None
    if obj_type.endswith('Feature') or obj_type in ('FaultInterpretation', 'WellboreInterpretation'):
        # BaseResqpy: title from the Citation's Title when the part has a Citation
        citation = rqet.find_tag(root, 'Citation')
        return (None if citation is None else rqet.find_tag_text(citation, 'Title'),)
    if obj_type.endswith('Interpretation'):
        return (False, rqet.citation_title_for_node(root))
    return None


def _hashable_key(obj_type: str, obj):
    """The key, or None when it cannot serve as a dict key safely (then: one bucket for the type)."""
    try:
        key = equivalence_key(obj_type, obj)
        hash(key)
    except Exception:   # noqa: BLE001 - an unexpected attribute: fall back to comparing all
        return None
    # floats that are NaN never compare equal to themselves; keep such objects out of keyed lookup
    if any(isinstance(v, float) and math.isnan(v) for v in key):
        return None
    return key


_UNREADABLE = object()      # a resident whose object could not be built (filed unkeyed, in order)
_NOT_BUILT = object()       # a resident filed by its XML key whose object is built when compared


class _TypeIndex:
    """Residents of one obj_type in model order, with buckets by key."""

    __slots__ = ("entries", "buckets", "keyed")

    def __init__(self):
        self.entries: list[list] = []       # [uuid int, resident object or marker], model order
        self.buckets: dict[tuple, list[list]] = {}
        self.keyed = True

    def add(self, uuid_int: int, obj, key) -> None:
        entry = [uuid_int, obj]
        self.entries.append(entry)
        if key is None:
            self.keyed = False            # compare every resident of this type from now on
            self.buckets.clear()
        elif self.keyed:
            self.buckets.setdefault(key, []).append(entry)

    def candidates(self, key):
        if not self.keyed or key is None:
            return self.entries
        return self.buckets.get(key, ())


class IndexedConsolidation(cons.Consolidation):
    """Drop-in for resqpy.olio.consolidation.Consolidation (install as model.consolidation)."""

    def __init__(self, resident_model):
        super().__init__(resident_model)
        self._index: dict[str, _TypeIndex] = {}
        self._pending: dict[str, list[int]] = {}       # residents not yet constructed, model order
        self._scanned = 0                               # how many of model.object_parts are filed
        self.in_progress: set[int] = set()              # uuid ints of parts being copied
        # uuid int -> key of a resident added from a worker's plan (resqmp.splice), which computed
        # it: filed by it, its XML not read back nor its object built until a query compares it
        self.key_hints: dict[int, tuple] = {}
        self.constructions = 0                          # resident objects built (for tests/bench)
        self.comparisons = 0

    # -- resident bookkeeping ---------------------------------------------------------------
    def _catch_up(self) -> None:
        parts = self.model.object_parts
        n = len(parts)
        if n < self._scanned:        # parts were removed: start again from scratch
            self._index.clear()
            self._pending.clear()
            self._scanned = 0
        if n == self._scanned:
            return
        new = list(itertools.islice(reversed(parts), n - self._scanned))
        new.reverse()
        forest = self.model.parts_forest
        for part in new:
            info = forest.get(part)
            if info is None:
                continue
            obj_type = info[0]
            if obj_type is not None and obj_type.startswith('obj_'):
                obj_type = obj_type[4:]
            if obj_type in CONSOLIDATABLE:
                self._pending.setdefault(obj_type, []).append(info[1].int)
        self._scanned = n

    def file_keyed_by_xml(self) -> None:
        """File now the residents keyed from their XML (features, interpretations), as the next
        query of their type would: their trees may then leave memory (resqmp.epc_store) without
        being read back only to be filed."""
        self._catch_up()
        for obj_type, pending in self._pending.items():
            if pending and (obj_type.endswith('Feature') or obj_type.endswith('Interpretation')):
                self._type_index(obj_type)

    def _type_index(self, obj_type: str) -> _TypeIndex:
        index = self._index.get(obj_type)
        if index is None:
            index = self._index[obj_type] = _TypeIndex()
        pending = self._pending.get(obj_type)
        if pending:
            for uuid_int in pending:
                hint = self.key_hints.pop(uuid_int, None)
                if hint is not None:
                    index.add(uuid_int, _NOT_BUILT, hint)
                    continue
                key = xml_key(obj_type, self._root(self.model, uuid_int))
                if key is not None:
                    index.add(uuid_int, _NOT_BUILT, key)
                    continue
                self.constructions += 1
                try:
                    obj = _construct(self.model, obj_type, bu.uuid_from_int(uuid_int))
                except Exception:   # noqa: BLE001 - resqpy raises only if a query reaches it
                    index.add(uuid_int, _UNREADABLE, None)
                    continue
                index.add(uuid_int, obj, _hashable_key(obj_type, obj))
            pending.clear()
        return index

    @staticmethod
    def _root(model, uuid_int: int):
        part = model.uuid_part_dict.get(uuid_int)
        if part is None:
            return None
        entry = model.parts_forest.get(part)
        if entry is None or entry[2] is None:
            return model.root_for_part(part)
        return entry[2].getroot()

    def _type_in_progress(self, obj_type: str) -> bool:
        if not self.in_progress:
            return False
        model = self.model
        for uuid_int in self.in_progress:
            part = model.uuid_part_dict.get(uuid_int)
            if part is not None and model.type_of_part(part, strip_obj=True) == obj_type:
                return True
        return False

    # -- the query ----------------------------------------------------------------------------
    def equivalent_uuid_int_for_part(self, part, immigrant_model=None, ignore_identical_part=False):
        """Same result (and the same map updates) as resqpy's Consolidation for this model."""
        if not part:
            return None
        if immigrant_model is None:
            immigrant_model = self.model
        immigrant_uuid_int = rqet.uuid_in_part_name(part).int
        if immigrant_uuid_int in self.map:
            return self.map[immigrant_uuid_int]
        obj_type = immigrant_model.type_of_part(part, strip_obj=True)
        if obj_type is None or obj_type not in CONSOLIDATABLE:
            return None
        self._catch_up()
        if self._type_in_progress(obj_type):
            # a resident of this type is mid-copy: do exactly what resqpy does, uncached
            return super().equivalent_uuid_int_for_part(part, immigrant_model=immigrant_model,
                                                        ignore_identical_part=ignore_identical_part)
        index = self._type_index(obj_type)
        if not index.entries:
            return None
        if not ignore_identical_part:
            resident_part = self.model.uuid_part_dict.get(immigrant_uuid_int)
            if resident_part is not None and self.model.type_of_part(resident_part, strip_obj=True) == obj_type:
                return immigrant_uuid_int
        immigrant_uuid = bu.uuid_from_int(immigrant_uuid_int)
        key = xml_key(obj_type, self._root(immigrant_model, immigrant_uuid_int))
        if key is not None and index.keyed and not index.candidates(key):
            return None            # no resident can be equivalent: no object needed to know it
        immigrant_obj = _construct(immigrant_model, obj_type, immigrant_uuid)
        assert immigrant_obj is not None
        if key is None:
            key = _hashable_key(obj_type, immigrant_obj)
        for entry in index.candidates(key):
            resident_uuid_int, resident_obj = entry
            if ignore_identical_part and resident_uuid_int == immigrant_uuid_int:
                continue
            if resident_obj is _NOT_BUILT:
                self.constructions += 1
                resident_obj = entry[1] = _construct(self.model, obj_type, bu.uuid_from_int(resident_uuid_int))
            elif resident_obj is _UNREADABLE:
                # resqpy builds residents in order and fails here; so do we (or use it if it now reads)
                resident_obj = _construct(self.model, obj_type, bu.uuid_from_int(resident_uuid_int))
            self.comparisons += 1
            if immigrant_obj == resident_obj:   # == is the class's is_equivalent, as in resqpy
                while resident_uuid_int in self.map:
                    resident_uuid_int = self.map[resident_uuid_int]
                self.map[immigrant_uuid_int] = resident_uuid_int
                return resident_uuid_int
        return None
