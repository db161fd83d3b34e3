"""Copy parts from task models into one resident model: resqpy's algorithm, without its O(N) steps.

This follows resqpy 5.2's ``Model.copy_uuid_from_other_model`` → ``_copy_part_from_other_model``
step by step, in the same order, for the arguments function_multiprocessing uses (no realization,
no force, no cut lists), so the resulting XML, relationships, part order and HDF5 content are the
same. What differs is only how each step finds what it needs:

* equivalent resident parts come from an ``IndexedConsolidation`` (resqmp.consolidate): same
  decisions, each candidate compared only with residents that can be equivalent;
* HDF5 arrays are written through one output file kept open for the whole recombination, and one
  input file open per task (resqpy opens both files once per copied part);
* "does this relationship already exist" is a set lookup per rels part instead of a scan of every
  relationship of, say, the grid that every task's connection set refers to;
* "is the referenced part already here" is a dict lookup instead of building the list of all parts.

``store_epc`` writes what resqpy's ``Model.store_epc`` writes, entry for entry; the XML of parts
(which no longer changes once copied) and of relationships not touched since is serialised at the
end of each task's merge, while other tasks still run, so publishing after the last task costs
little more than writing bytes.
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import zipfile as zf

import h5py

import resqpy.model._catalogue as m_c
import resqpy.model._forestry as m_f
import resqpy.olio.consolidation as cons
import resqpy.olio.uuid as bu
import resqpy.olio.write_hdf5 as whdf5
import resqpy.olio.xml_et as rqet
from resqpy.olio.xml_namespaces import curly_namespace as ns
from resqpy.olio.xml_namespaces import namespace as ns_url

from resqmp.consolidate import IndexedConsolidation

log = logging.getLogger(__name__)

_EXT = 'obj_EpcExternalPartReference'


class Merger:
    """Merges task models into `model` (a resqpy Model: new, or loaded to be added to)."""

    def __init__(self, model, consolidate: bool = True):
        self.model = model
        self.consolidate = consolidate
        if consolidate:
            if model.consolidation is None or not isinstance(model.consolidation, IndexedConsolidation):
                old = model.consolidation
                model.consolidation = IndexedConsolidation(model)
                if old is not None:
                    model.consolidation.map.update(old.map)
        self._targets: dict[str, set[str]] = {}    # rels part name -> Targets of its Relationships
        self._h5_out = None
        self._h5_out_name = None
        self._h5_in = None
        self._h5_in_name = None
        self.h5_datasets = 0
        self._out_paths: set[str] = set()
        self._xml_cache: dict[str, bytes] = {}       # part name -> serialised XML (final)
        self._rels_cache: dict[str, tuple[int, bytes]] = {}   # rels part -> (children, serialised)
        self._parts_seen = len(model.parts_forest)

    # -- public -------------------------------------------------------------------------------
    def merge_model(self, other, uuids) -> None:
        """Copy `uuids` of task model `other`, in resqpy's consolidation order."""
        ordered = cons.sort_uuids_list(other, uuids)
        if ordered is None:
            ordered = other.uuids()
        try:
            for u in ordered:
                self.copy_uuid(other, u)
        finally:
            self._close_input()
        self._serialise_new_parts()

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
        other_h5 = other.h5_file_name()
        self_h5 = model.h5_file_name(file_must_exist=False)
        hdf5_copy_needed = not os.path.samefile(self_h5, other_h5)
        return self._copy(other, part, self_h5, other_h5, hdf5_copy_needed, uuid_int)

    def close(self) -> None:
        """Close the HDF5 files (call before the model stores or reads its own HDF5 file)."""
        self._close_input()
        if self._h5_out is not None:
            self._h5_out.close()
            self._h5_out = None
            self._h5_out_name = None

    def store_epc(self, epc_file=None) -> None:
        """As resqpy's Model.store_epc(quiet=True): the same entries, in the same order."""
        model = self.model
        if not epc_file:
            epc_file = model.epc_file
        assert epc_file, 'no file name given or known when attempting to store epc'
        assert model.main_tree is not None
        if model.main_root is None:
            model.main_root = model.main_tree.getroot()
        with zf.ZipFile(epc_file, mode='w') as epc:
            with epc.open('[Content_Types].xml', mode='w') as main_xml:
                rqet.write_xml(main_xml, model.main_tree, standalone='yes')
            for part_name, (_, _, part_tree) in model.parts_forest.items():
                if part_tree is None:
                    log.warning('No xml tree present to write for part: ' + part_name)
                    continue
                cached = self._xml_cache.get(part_name)
                if part_name[0] == '/':
                    part_name = part_name[1:]
                with epc.open(part_name, mode='w') as part_xml:
                    if cached is not None:
                        part_xml.write(cached)
                    else:
                        rqet.write_xml(part_xml, part_tree, standalone=None)
            for part_name, (_, part_tree) in model.other_forest.items():
                if part_tree is None:
                    log.warning('No xml tree present to write for other part: ' + part_name)
                    continue
                if part_name[0] == '/':
                    part_name = part_name[1:]
                with epc.open(part_name, mode='w') as part_xml:
                    rqet.write_xml(part_xml, part_tree, standalone='yes')
            if model.rels_present:
                for part_name, (_, part_tree) in model.rels_forest.items():
                    if part_tree is None:
                        log.warning('No xml tree present to write for rels part: ' + part_name)
                        continue
                    cached = self._rels_cache.get(part_name)
                    with epc.open(part_name, mode='w') as part_xml:
                        if cached is not None and cached[0] == len(part_tree.getroot()):
                            part_xml.write(cached[1])
                        else:
                            rqet.write_xml(part_xml, part_tree, standalone='yes')
        model.set_epc_file_and_directory(epc_file)
        model.modified = False

    def _serialise_new_parts(self) -> None:
        """Serialise the XML of parts added since the last call (final once copied), and their rels
        (kept until a later relationship changes them)."""
        model = self.model
        forest = model.parts_forest
        n = len(forest)
        if n < self._parts_seen:
            self._xml_cache.clear()
            self._rels_cache.clear()
            self._parts_seen = n
            return
        new = list(itertools.islice(reversed(forest), n - self._parts_seen))
        self._parts_seen = n
        for part_name in reversed(new):
            part_tree = forest[part_name][2]
            if part_tree is None:
                continue
            buf = io.BytesIO()
            rqet.write_xml(buf, part_tree, standalone=None)
            self._xml_cache[part_name] = buf.getvalue()
            rels_name = rqet.rels_part_name_for_part(part_name)
            entry = model.rels_forest.get(rels_name) if model.rels_present else None
            if entry is not None and entry[1] is not None:
                buf = io.BytesIO()
                rqet.write_xml(buf, entry[1], standalone='yes')
                self._rels_cache[rels_name] = (len(entry[1].getroot()), buf.getvalue())

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
            self._targets.pop(rels_name, None)   # a fresh rels tree
            self._rels_cache.pop(rels_name, None)
            in_progress = getattr(model.consolidation, 'in_progress', None) if self.consolidate else None
            if in_progress is not None:
                in_progress.add(uuid_int)
            try:
                if hdf5_copy_needed:
                    paths = [node.text for node in rqet.list_of_descendant_tag(other_root, 'PathInHdfFile')]
                    count = self._copy_h5_paths(other_h5, self_h5, paths)
                    self._hdf5_setup(count, root_node)

                if model.uuid_rels_dict.get(uuid.int) is None:
                    model.uuid_rels_dict[uuid.int] = (set(), set(), set())

                self._copy_referenced_parts(other, root_node, uuid, self_h5, other_h5, hdf5_copy_needed)
            finally:
                if in_progress is not None:
                    in_progress.discard(uuid_int)

            m_f._add_uuid_relations(model, uuid.int, part)
            resident_uuid = uuid
        else:
            root_node = m_c._root_for_uuid(model, resident_uuid)

        self._copy_relationships_for_present_targets(other, resident_uuid, root_node)
        return m_c._part_for_uuid(model, resident_uuid)

    def _hdf5_setup(self, hdf5_count, root_node) -> None:
        """resqpy's _copy_part_hdf5_setup (h5_uuid not supplied, as function_multiprocessing does)."""
        if not hdf5_count:
            return
        model = self.model
        h5_uuid = model.h5_uuid()
        if h5_uuid is None:
            model.create_hdf5_ext()
            h5_uuid = model.h5_uuid()
        model.change_hdf5_uuid_in_hdf5_references(root_node, None, h5_uuid)
        ext_part = rqet.part_name_for_object(_EXT, h5_uuid, prefixed=False)
        ext_node = m_c._root_for_part(model, ext_part)
        self._reciprocal(root_node, 'mlToExternalPartProxy', ext_node, 'externalPartProxyToMl',
                         avoid_duplicates=False)

    def _copy_referenced_parts(self, other, root_node, uuid, self_h5, other_h5, hdf5_copy_needed) -> None:
        model = self.model
        reference_node_dict = None
        relatives = other.uuid_rels_dict.get(uuid.int)
        if relatives is None:
            return
        for ref_uuid_int in relatives[0]:
            if ref_uuid_int in model.uuid_part_dict:
                self._reciprocal(root_node, 'sourceObject', m_c._root_for_uuid(model, ref_uuid_int),
                                 'destinationObject')
                continue
            referred_part = m_c._part_for_uuid(other, bu.uuid_from_int(ref_uuid_int))
            if m_c._type_of_part(other, referred_part) == _EXT:
                continue
            if referred_part in model.object_parts:     # resqpy: `in m_c._list_of_parts(model)`
                self._reciprocal(root_node, 'sourceObject', m_c._root_for_part(model, referred_part),
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
                    for ref_node in rqet.list_obj_references(root_node):
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

    def _copy_relationships_for_present_targets(self, other, resident_uuid, root_node) -> None:
        model = self.model
        other_parts = m_c._list_of_parts(other)
        for source_flag in (True, False):
            # resqpy ignores uuid_is_source: both passes see every related part (the second adds
            # nothing new, the duplicate check sees the first pass's relationships)
            related_parts = m_c._parts_list_filtered_by_related_uuid(other, other_parts, resident_uuid,
                                                                     uuid_is_source=source_flag)
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
                self._reciprocal(root_node, sd_a, related_node, sd_b)

    # -- relationships: resqpy's _create_reciprocal_relationship with indexed duplicate checks ----
    def _rels_for(self, node):
        uuid = node.attrib['uuid']
        obj_type = rqet.stripped_of_prefix(rqet.content_type(node.attrib[ns['xsi'] + 'type']))
        part_name = rqet.part_name_for_object(obj_type, uuid)
        rel_part_name = rqet.rels_part_name_for_part(part_name)
        _, rel_tree = self.model.rels_forest[rel_part_name]
        return uuid, part_name, rel_part_name, rel_tree.getroot()

    def _has_target(self, rel_part_name, rel_root, target) -> bool:
        targets = self._targets.get(rel_part_name)
        if targets is None:
            targets = {existing.attrib['Target'] for existing in rqet.list_of_tag(rel_root, 'Relationship')}
            self._targets[rel_part_name] = targets
        return target in targets

    def _add_relationship(self, rel_part_name, rel_root, rel_id, rel_type, target) -> None:
        rel = rqet.SubElement(rel_root, ns['rels'] + 'Relationship')
        rel.set('Id', _id_str(rel_id))
        rel.set('Type', ns_url['rels_ext'] + rel_type)
        rel.set('Target', target)
        self._rels_cache.pop(rel_part_name, None)
        targets = self._targets.get(rel_part_name)
        if targets is not None:
            targets.add(target)

    def _reciprocal(self, node_a, rel_type_a, node_b, rel_type_b, avoid_duplicates=True) -> None:
        assert self.model.rels_present
        if node_a is None or node_b is None:
            log.error('attempt to create relationship with missing object')
            return
        uuid_a, part_name_a, rel_part_a, rel_root_a = self._rels_for(node_a)
        uuid_b, part_name_b, rel_part_b, rel_root_b = self._rels_for(node_b)
        if not avoid_duplicates or not self._has_target(rel_part_a, rel_root_a, part_name_b):
            self._add_relationship(rel_part_a, rel_root_a, uuid_b, rel_type_a, part_name_b)
        if not avoid_duplicates or not self._has_target(rel_part_b, rel_root_b, part_name_a):
            self._add_relationship(rel_part_b, rel_root_b, uuid_a, rel_type_b, part_name_a)

    # -- HDF5: resqpy's copy_h5_path_list through files kept open --------------------------------
    def _out_file(self, self_h5):
        if self._h5_out is not None and self._h5_out_name != self_h5:
            self._h5_out.close()
            self._h5_out = None
        if self._h5_out is None:
            self._h5_out = h5py.File(self_h5, 'a')
            self._h5_out_name = self_h5
            # what the file holds: the output is written only through this handle from now on
            self._out_paths = set()
            visit = getattr(self._h5_out, 'visit_links', self._h5_out.visit)   # links count as present
            visit(self._out_paths.add)
        return self._h5_out

    def _in_file(self, other_h5):
        if self._h5_in is not None and self._h5_in_name != other_h5:
            self._close_input()
        if self._h5_in is None:
            self._h5_in = h5py.File(other_h5, 'r')
            self._h5_in_name = other_h5
        return self._h5_in

    def _close_input(self) -> None:
        if self._h5_in is not None:
            self._h5_in.close()
            self._h5_in = None
            self._h5_in_name = None

    def _copy_h5_paths(self, file_in, file_out, paths) -> int:
        """resqpy's copy_h5_path_list(file_in, file_out, paths, mode='a'), same datasets written."""
        assert file_out != file_in, 'identical input and output files specified for hdf5 copy'
        assert paths is not None
        chunks = whdf5.global_default_chunks
        compression = whdf5.global_default_compression
        if compression is not None and chunks is None:
            chunks = 'auto'
        fp_out = self._out_file(file_out)
        if not paths:
            return 0
        fp_in = self._in_file(file_in)
        existing = self._out_paths
        count = 0
        for path in paths:
            key = _h5_key(path)
            if key in existing:
                log.warning(f'not copying hdf5 data due to pre-existence for: {path}')
                continue
            source = _plain_dataset(fp_in, path) if chunks is None or chunks == 'none' else None
            if source is None:
                assert path in fp_in, f'internal path {path} not found in hdf5 file {file_in}'
            build = ''
            group_list = list(path.split(sep='/'))
            assert len(group_list) > 1, f'no hdf5 group(s) in internal path {path}'
            for w in group_list[:-1]:
                if w:
                    build += '/' + w
                    if _h5_key(build) not in existing:
                        fp_out.create_group(build)
                        existing.add(_h5_key(build))
            build += '/' + group_list[-1]
            if source is not None:
                # a contiguous, unfiltered numeric dataset: copied as stored, which is what
                # create_dataset(data=...) rebuilds (same type, shape, layout, no attributes)
                h5py.h5o.copy(fp_in.id, source, fp_out.id, build.encode(), copypl=_COPY_PLAIN)
            elif chunks is None or chunks == 'none':
                fp_out.create_dataset(build, data=fp_in[path])
            elif compression is None or compression == 'none':
                fp_out.create_dataset(build, data=fp_in[path], chunks=True)
            else:
                fp_out.create_dataset(build, data=fp_in[path], chunks=True, compression=compression)
            existing.add(key)
            count += 1
        self.h5_datasets += count
        return count


_COPY_PLAIN = h5py.h5p.create(h5py.h5p.OBJECT_COPY)
_COPY_PLAIN.set_copy_object(h5py.h5o.COPY_WITHOUT_ATTR_FLAG)
_PLAIN_CLASSES = (h5py.h5t.INTEGER, h5py.h5t.FLOAT)


def _h5_key(path: str) -> str:
    """An HDF5 path as h5py's visit() names it: no leading slash, no empty components."""
    return '/'.join(w for w in path.split('/') if w)


def _plain_dataset(fp_in, path):
    """path (bytes) if it names a contiguous, unfiltered integer/float dataset in fp_in, else None."""
    name = path.encode()
    try:
        dsid = h5py.h5d.open(fp_in.id, name)
    except (KeyError, ValueError, TypeError):
        return None
    try:
        if dsid.get_type().get_class() not in _PLAIN_CLASSES:
            return None
        dcpl = dsid.get_create_plist()
        if dcpl.get_layout() != h5py.h5d.CONTIGUOUS or dcpl.get_nfilters():
            return None
        return name
    finally:
        dsid.close()


def _id_str(uuid) -> str:
    stringy = str(uuid)
    if not (rqet.pretend_to_be_fesapi or rqet.use_fesapi_quirks) or not stringy[0].isdigit():
        return stringy
    return '_' + stringy
