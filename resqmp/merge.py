"""Copy parts from task models into one resident model: resqpy's algorithm, without its O(N) steps.

This follows resqpy 5.2's ``Model.copy_uuid_from_other_model`` → ``_copy_part_from_other_model``
step by step, in the same order, for the arguments function_multiprocessing uses (no realization,
no force, no cut lists), so the resulting XML, relationships, part order and HDF5 content are the
same. What differs is only how each step finds what it needs:

* equivalent resident parts come from an ``IndexedConsolidation`` (resqmp.consolidate): same
  decisions, each candidate compared only with residents that can be equivalent;
* HDF5 arrays go through files kept open (resqmp.h5_copy);
* "does this relationship already exist" is a set lookup (resqmp.relationships);
* "is the referenced part already here" is a dict lookup instead of building the list of all parts;
* a part's references are found by one XPath query (resqmp.task_model.obj_references);
* part XML is serialised as each task's merge ends and the EPC written from it (resqmp.epc_store);
  given a spill file, the new parts' trees then leave memory until something reads them again.
"""
from __future__ import annotations

import logging
import os

import resqpy.model._catalogue as m_c
import resqpy.model._forestry as m_f
import resqpy.olio.consolidation as cons
import resqpy.olio.uuid as bu
import resqpy.olio.xml_et as rqet
from resqpy.olio.xml_namespaces import curly_namespace as ns

from resqmp.consolidate import IndexedConsolidation
from resqmp.epc_store import SerialisedParts, round_trips
from resqmp.h5_copy import H5Copier
from resqmp.relationships import RelationshipIndex
from resqmp.task_model import add_uuid_relations, obj_references

log = logging.getLogger(__name__)

_EXT = 'obj_EpcExternalPartReference'


def unknown_uuid(other, uuids) -> str | None:
    """The first entry of `uuids` that names no part of task model `other`, as resqpy reads it
    (Model.part_for_uuid: a uuid string, also with a tail or a leading underscore, any case),
    or None when every entry names one. resqpy's recombination stops at such an entry: its
    sort_uuids_list takes the type of part_for_uuid(u), None for an absent uuid (AttributeError),
    and a string that is not a uuid raises ValueError; function_multiprocessing then raises and
    writes nothing. There is no resqpy content to match for that task: the caller leaves it out
    whole, checked before any of it is copied."""
    for u in uuids:
        try:
            part = other.part_for_uuid(u)
        except (ValueError, TypeError, AttributeError):
            part = None
        if part is None or m_c._type_of_part(other, part) is None:
            return u
    return None


class Merger:
    """Merges task models into `model` (a resqpy Model: new, or loaded to be added to)."""

    def __init__(self, model, consolidate: bool = True, spill=None):
        """spill: a file to create (in a staging folder) where the XML of each task's parts goes
        once its merge ends, the parts' trees leaving memory (resqmp.epc_store); None: kept."""
        self.model = model
        self.consolidate = consolidate
        if consolidate:
            if model.consolidation is None or not isinstance(model.consolidation, IndexedConsolidation):
                old = model.consolidation
                model.consolidation = IndexedConsolidation(model)
                if old is not None:
                    model.consolidation.map.update(old.map)
        self.serialised = SerialisedParts(model, spill)
        self.relationships = RelationshipIndex(model, on_change=self.serialised.rels_changed)
        self.h5 = H5Copier()
        # while a share of a group partial merges: uuid int -> the task's related parts, in the
        # task's own order (what resqpy reads from the task model; see resqmp.premerge)
        self._related: dict[int, list[str]] | None = None
        # ... and the partial's stored XML by part name, with its HDF5 proxy's uuid: a part
        # copied without a reference rewritten is those bytes with the proxy's uuid replaced
        # (what serialising its tree gives; the partial was written by the same serialiser)
        self._stored: tuple[dict, str] | None = None
        self._plain: set[str] | frozenset = frozenset()   # the partial's plain datasets (h5_copy)
        # while merge_model merges a task model: that model, and its object parts with their
        # uuid ints in its part order (read once, when first needed)
        self._task = None
        self._part_ints: list[tuple[str, int]] | None = None
        self._splicer = None           # resqmp.splice.Splicer, made for the first plan

    # -- public -------------------------------------------------------------------------------
    def merge_model(self, other, uuids, stored: dict | None = None, plain: set[str] | frozenset = frozenset()) -> None:
        """Copy `uuids` of task model `other`, in resqpy's consolidation order. `stored`: the task
        EPC's members as stored (load_task_model's `raw`): a part copied without a reference
        rewritten takes its bytes, HDF5 proxy uuid replaced, instead of being serialised again
        (resqpy wrote them with the serialiser the launcher would use, from the same XML).
        `plain`: what self.h5.check_input returned for the task's HDF5 file (copied as stored
        without opening those datasets again)."""
        ordered = cons.sort_uuids_list(other, uuids)
        if ordered is None:
            ordered = other.uuids()
        if stored is not None:
            self._stored = (stored, str(other.h5_uuid()))
        self._plain = plain
        self._task, self._part_ints = other, None
        try:
            for u in ordered:
                self.copy_uuid(other, u)
        finally:
            self.h5.close_input()
            self._stored, self._plain = None, frozenset()
            self._task = self._part_ints = None
        self._task_done()

    def arrays_to_copy(self, other, uuids) -> dict[str, str]:
        """HDF5 path -> part, for every array merge_model(other, uuids) may copy from other's HDF5
        file: the PathInHdfFile of the uuids' parts and, recursively, of the parts they refer to
        (_copy_referenced_parts), less those copy_part and _copy_referenced_parts skip (already in
        the model, HDF5 proxies). A part that consolidation will find equivalent to a resident is
        not copied, but that is known only during the copy: its arrays count here too. For a check
        before anything of the task is copied (a copy that failed half-way would leave part of it).
        Every entry of `uuids` must name a part of `other` (unknown_uuid: checked first)."""
        model = self.model
        arrays: dict[str, str] = {}
        seen: set[int] = set()
        todo = [other.part_for_uuid(u) for u in uuids]
        while todo:
            part = todo.pop()
            if part is None or part in model.parts_forest or m_c._type_of_part(other, part) == _EXT:
                continue
            uuid_int = rqet.uuid_in_part_name(part).int
            if uuid_int in seen:
                continue
            seen.add(uuid_int)
            root = m_c._root_for_part(other, part, is_rels=False)
            if root is None:
                continue                   # _copy logs it and copies nothing
            # the nodes rqet.list_of_descendant_tag(root, 'PathInHdfFile') finds, found by lxml
            for node in root.iter('{*}PathInHdfFile'):
                if node.text:
                    arrays.setdefault(node.text, part)
            relatives = other.uuid_rels_dict.get(uuid_int)
            for ref_uuid_int in relatives[0] if relatives is not None else ():
                if ref_uuid_int not in model.uuid_part_dict:
                    todo.append(other.uuid_part_dict.get(ref_uuid_int))
        return arrays

    def merge_share(self, share) -> None:
        """Copy one task's share of a group partial (resqmp.premerge.Share): its uuids, already in
        resqpy's consolidation order, from the partial's model, reading the task's related parts
        from the share. The same steps as merge_model on the task's own model; the partial's
        HDF5 file stays open for the group's next share."""
        self._related, self._stored, self._plain = share.related, (share.stored, share.proxy), share.plain
        try:
            for u in share.uuids:
                self.copy_uuid(share.model, u)
        finally:
            self._related, self._stored, self._plain = None, None, frozenset()
        self._task_done()

    def splice_share(self, share) -> bool:
        """Merge one task's share of a group partial from its worker's plan (resqmp.splice), when
        the plan holds for the model as it is now; False, nothing changed, when it does not (or
        the share has none): merge_share then copies it."""
        if share.plan is None:
            return False
        if self._splicer is None:
            from resqmp.splice import Splicer
            self._splicer = Splicer(self)
        return self._splicer.splice(share.plan, share.h5, share.plain, share.tree)

    @property
    def spliced(self) -> int:
        """Shares merged from their plan so far."""
        return 0 if self._splicer is None else self._splicer.spliced

    def _task_done(self) -> None:
        """The task's parts are final: serialise them (and, with a spill file, let their trees go,
        once consolidation has read from them what it files residents by)."""
        if self.serialised.spill is not None and isinstance(self.model.consolidation, IndexedConsolidation):
            self.model.consolidation.file_keyed_by_xml()
        for rels_name in self.serialised.serialise_new_parts():
            self.relationships.forget(rels_name)      # its targets are read again if it comes back

    def copy_uuid(self, other, uuid):
        """As Model.copy_uuid_from_other_model(other, uuid, consolidate=self.consolidate)."""
        part = other.part_for_uuid(uuid)
        if part is None:
            return None
        copied = self.copy_part(other, part, uuid_int=bu.uuid_as_int(uuid))
        if copied is None:
            return None
        return self.model.uuid_for_part(copied)

    def copy_part(self, other, part, uuid_int=None):
        """As Model.copy_part_from_other_model(other, part, consolidate=self.consolidate)."""
        model = self.model
        assert other is not None
        if other is model:
            return part
        assert part is not None
        if part in model.parts_forest:
            return part
        if m_c._type_of_part(other, part) == _EXT:
            return None
        # not file_must_exist (resqpy's): a task whose parts name no array is merged without its
        # HDF5 file; one whose parts name arrays had it checked first (Recombiner._check_arrays)
        other_h5 = other.h5_file_name(file_must_exist=False)
        self_h5 = model.h5_file_name(file_must_exist=False)
        hdf5_copy_needed = not _same_file(self_h5, other_h5)
        return self._copy(other, part, self_h5, other_h5, hdf5_copy_needed, uuid_int)

    def close(self) -> None:
        """Close the HDF5 files (call before the model stores or reads its own HDF5 file)."""
        self.h5.close()

    def forget_merge_state(self) -> None:
        """The merge is over (the publish): let go of what only merging reads, resqpy's relation
        sets of every part (~3 KB a find-faces task) and the consolidation's index and map, so the
        zip's directory that store_epc builds (an entry per part and rels part) fits in their
        room rather than on top of them. The model is written, never merged into, after this."""
        model = self.model
        model.uuid_rels_dict.clear()
        model.consolidation = None
        self.h5.close()

    def close_spill(self) -> None:
        """Close the spill file (after the last store_epc)."""
        self.serialised.close()

    def store_epc(self, epc_file=None) -> None:
        """As resqpy's Model.store_epc(quiet=True): the same entries, in the same order."""
        self.serialised.store_epc(epc_file)

    @property
    def h5_datasets(self) -> int:
        return self.h5.datasets

    # -- resqpy's _copy_part_from_other_model, step by step -------------------------------------
    def _copy(self, other, part, self_h5, other_h5, hdf5_copy_needed, uuid_int):
        model = self.model
        if uuid_int is None:
            uuid = rqet.uuid_in_part_name(part)
            uuid_int = uuid.int
        else:
            uuid = bu.uuid_from_int(uuid_int)

        assert m_c._part_for_uuid(model, uuid) is None, 'part copying failure: uuid exists for different part!'

        other_root = m_c._root_for_part(other, part, is_rels=False)
        if other_root is None:
            log.error(f'failed to copy part (missing in source model?): {str(part)}')
            return None

        resident_uuid = None
        if self.consolidate:
            if model.consolidation is None:
                model.consolidation = IndexedConsolidation(model)
            resident_uuid = model.consolidation.equivalent_uuid_for_part(part, immigrant_model=other)

        if resident_uuid is None:
            root_node = m_f._duplicate_node(model, other_root, add_to_rels_dict=False)
            assert root_node is not None
            rels_name = rqet.rels_part_name_for_part(part)
            self.relationships.forget(rels_name)      # a fresh rels tree
            self.serialised.rels_changed(rels_name)
            in_progress = getattr(model.consolidation, 'in_progress', None) if self.consolidate else None
            if in_progress is not None:
                in_progress.add(uuid_int)
            proxy = None               # the HDF5 proxy's uuid now in the part's references
            try:
                if hdf5_copy_needed:
                    paths = [node.text for node in rqet.list_of_descendant_tag(other_root, 'PathInHdfFile')]
                    count = self.h5.copy_paths(other_h5, self_h5, paths, self._plain)
                    proxy = self._hdf5_setup(count, root_node) if paths else ''

                if model.uuid_rels_dict.get(uuid.int) is None:
                    model.uuid_rels_dict[uuid.int] = (set(), set(), set())

                rewritten = self._copy_referenced_parts(other, root_node, uuid, self_h5, other_h5, hdf5_copy_needed)
            finally:
                if in_progress is not None:
                    in_progress.discard(uuid_int)
            if self._stored is not None and proxy is not None and not rewritten:
                self._give_stored(part, other_root, proxy)

            add_uuid_relations(model, uuid.int, part)
            resident_uuid = uuid
        else:
            root_node = m_c._root_for_uuid(model, resident_uuid)

        self._copy_relationships_for_present_targets(other, resident_uuid, root_node)
        return m_c._part_for_uuid(model, resident_uuid)

    def _give_stored(self, part: str, other_root, proxy: str) -> None:
        """The partial's bytes of `part`, its HDF5 proxy's uuid replaced by ours (`proxy`; '' when
        the part has no HDF5 path and so kept its references as they were)."""
        stored, their_proxy = self._stored
        xml = stored.get(part)
        if not isinstance(xml, bytes) or not round_trips(xml):
            return                           # serialised from the tree, as any other part
        if proxy:
            # every HdfProxy reference (what resqpy's change_hdf5_uuid_in_hdf5_references
            # rewrites) now names ours: the bytes match only if all of them named the partial's
            # (a part whose arrays the partial did not copy kept its task's) and nothing else does
            named = [getattr(rqet.find_tag(node, 'UUID'), 'text', None) for node in other_root.iter(ns['eml'] + 'HdfProxy')]
            theirs = their_proxy.encode()
            if set(named) != {their_proxy} or xml.count(theirs) != len(named):
                return
            xml = xml.replace(theirs, proxy.encode())
        self.serialised.given(part, xml)

    def _hdf5_setup(self, hdf5_count, root_node) -> str | None:
        """resqpy's _copy_part_hdf5_setup (h5_uuid not supplied, as function_multiprocessing does).
        Returns the proxy's uuid written in the part's references, None when none was written."""
        if not hdf5_count:
            return None
        model = self.model
        h5_uuid = model.h5_uuid()
        if h5_uuid is None:
            model.create_hdf5_ext()
            h5_uuid = model.h5_uuid()
        model.change_hdf5_uuid_in_hdf5_references(root_node, None, h5_uuid)
        ext_part = rqet.part_name_for_object(_EXT, h5_uuid, prefixed=False)
        ext_node = m_c._root_for_part(model, ext_part)
        self.relationships.reciprocal(root_node, 'mlToExternalPartProxy', ext_node, 'externalPartProxyToMl',
                         avoid_duplicates=False)
        return str(h5_uuid)

    def _copy_referenced_parts(self, other, root_node, uuid, self_h5, other_h5, hdf5_copy_needed) -> bool:
        """resqpy's _copy_referenced_parts; True when a reference in root_node was rewritten."""
        model = self.model
        reference_node_dict = None
        relatives = other.uuid_rels_dict.get(uuid.int)
        if relatives is None:
            return False
        for ref_uuid_int in relatives[0]:
            if ref_uuid_int in model.uuid_part_dict:
                self.relationships.reciprocal(root_node, 'sourceObject', m_c._root_for_uuid(model, ref_uuid_int),
                                 'destinationObject')
                continue
            referred_part = m_c._part_for_uuid(other, bu.uuid_from_int(ref_uuid_int))
            if m_c._type_of_part(other, referred_part) == _EXT:
                continue
            if referred_part in model.object_parts:     # resqpy: `in m_c._list_of_parts(model)`
                self.relationships.reciprocal(root_node, 'sourceObject', m_c._root_for_part(model, referred_part),
                                 'destinationObject')
                continue
            resident_part = self._copy(other, referred_part, self_h5, other_h5, hdf5_copy_needed, ref_uuid_int)
            if resident_part == referred_part:
                continue
            consolidation = model.consolidation
            if self.consolidate and consolidation is not None and ref_uuid_int in consolidation.map:
                resident_uuid_int = consolidation.map[ref_uuid_int]
                assert resident_uuid_int is not None
                if reference_node_dict is None:
                    reference_node_dict = {}
                    for ref_node in obj_references(root_node):
                        uuid_node = rqet.find_tag(ref_node, 'UUID')
                        node_uuid_int = bu.uuid_from_string(uuid_node.text).int
                        reference_node_dict.setdefault(node_uuid_int, []).append(uuid_node)
                uuid_node_list = reference_node_dict.pop(ref_uuid_int)
                for uuid_node in uuid_node_list:
                    uuid_node.text = str(bu.uuid_from_int(resident_uuid_int))
                if resident_uuid_int in reference_node_dict:
                    reference_node_dict[resident_uuid_int] += uuid_node_list
                else:
                    reference_node_dict[resident_uuid_int] = uuid_node_list
        return reference_node_dict is not None

    def _related_parts(self, other, resident_uuid) -> list:
        """resqpy's related parts of resident_uuid in `other`, in other's part order. From a group
        partial, the task's own list: the partial's part order and relations are the group's, and
        the order decides the order of relationships written."""
        if self._related is not None:
            return self._related.get(bu.uuid_from_string(resident_uuid).int, [])
        if other is not self._task or not other.rels_present or resident_uuid is None:
            return m_c._parts_list_filtered_by_related_uuid(other, m_c._list_of_parts(other), resident_uuid)
        # resqpy's _parts_list_filtered_by_related_uuid, the task's parts' uuid ints read once per task
        relations = other.uuid_rels_dict.get(bu.uuid_from_string(resident_uuid).int)
        if relations is None:
            return []
        all_relations = relations[0] | relations[1] | relations[2]
        if self._part_ints is None:
            forest = other.parts_forest
            self._part_ints = [(part, forest[part][1].int) for part in other.object_parts]
        return [part for part, uuid_int in self._part_ints if uuid_int in all_relations]

    def _copy_relationships_for_present_targets(self, other, resident_uuid, root_node) -> None:
        model = self.model
        related_parts = self._related_parts(other, resident_uuid)
        for source_flag in (True, False):
            # resqpy ignores uuid_is_source: both passes see every related part (the second adds
            # nothing new, the duplicate check sees the first pass's relationships)
            for related_part in related_parts:
                if related_part in model.parts_forest:
                    resident_related_part = related_part
                else:
                    if not self.consolidate:
                        continue
                    resident_related_uuid = model.consolidation.equivalent_uuid_for_part(related_part,
                                                                                         immigrant_model=other)
                    if resident_related_uuid is None:
                        continue
                    resident_related_part = rqet.part_name_for_object(m_c._type_of_part(other, related_part),
                                                                      resident_related_uuid)
                    if resident_related_part is None:
                        continue
                related_node = m_c._root_for_part(model, resident_related_part)
                assert related_node is not None
                if source_flag:
                    sd_a, sd_b = 'sourceObject', 'destinationObject'
                else:
                    sd_b, sd_a = 'sourceObject', 'destinationObject'
                self.relationships.reciprocal(root_node, sd_a, related_node, sd_b)


def _same_file(a, b) -> bool:
    """os.path.samefile, False when either is missing (a file not there is not ours)."""
    try:
        return a is not None and b is not None and os.path.samefile(a, b)
    except OSError:
        return False
