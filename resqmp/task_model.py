"""Loading a task's EPC for the merge: the Model resqpy's loader builds, built with less work.

``load_task_model(epc)`` returns the ``resqpy.model.Model`` that ``Model(epc, quiet=True)`` returns
(same parts in the same order, same XML trees, relationship dictionaries, content types, primary
CRS), following resqpy 5.2's ``_load_epc`` step by step for a full load of the whole EPC. Two
steps cost less:

* the file is read in one go and each stored (uncompressed) member sliced from it, checked
  against its CRC, instead of one ``epc.open`` per part (resqpy writes EPCs uncompressed);
* each part's references (resqpy's ``list_obj_references``: a recursive Python walk of every
  node) are found by one compiled XPath query, in document order, with resqpy's pruning rules
  (no look inside a reference; HDF5 proxies skipped): about half the time.

The merge reads this model and never changes it, so it is the input resqpy's own copy reads.
"""
from __future__ import annotations

import io
import logging
import struct
import zipfile as zf
import zlib

from lxml import etree

import resqpy.model as rq
import resqpy.model._forestry as m_f
import resqpy.olio.uuid as bu
import resqpy.olio.xml_et as rqet

log = logging.getLogger(__name__)

# elements with an attribute value containing 'DataObjectReference' (cheap to test in C); the
# exact rule, rqet.match (the value stripped of a '{uri}' or 'prefix:' part), is checked after
_REFERENCE_CANDIDATES = etree.XPath("descendant-or-self::*[@*[contains(., 'DataObjectReference')]]")


def obj_references(root) -> list:
    """rqet.list_obj_references(root): reference nodes in document order, not looking inside a
    reference, skipping references whose tag is HdfProxy (and what is inside them)."""
    if root is None:
        return []
    candidates = [node for node in _REFERENCE_CANDIDATES(root)
                  if any(rqet.match(v, 'DataObjectReference') for v in node.attrib.values())]
    if not candidates:
        return []
    found = set(candidates)
    refs = []
    for node in candidates:
        # resqpy stops at the outermost reference: one inside another is never reached
        if node is not root and _inside(node, root, found):
            continue
        if rqet.match(node.tag, 'HdfProxy'):
            continue
        refs.append(node)
    return refs


def _inside(node, root, found) -> bool:
    """Is an ancestor of node, up to root, a reference?"""
    for ancestor in node.iterancestors():
        if ancestor in found:
            return True
        if ancestor is root:
            return False
    return False


class DamagedEPC(ValueError):
    """A member of the EPC could not be read or parsed (load_task_model with strict=True)."""


def load_task_model(epc_file: str, raw: dict | None = None, strict: bool = False):
    """resqpy.model.Model(epc_file, quiet=True), read with the steps above. `raw`, if given, is
    filled with each member's bytes as stored (an exception for a member that could not be read).
    `strict`: a member that cannot be read or parsed raises DamagedEPC, where resqpy's load logs
    "okay to continue?" and drops the part (a merge would then go on without it)."""
    model = rq.Model(quiet=True)      # initialize() only: empty forests and dictionaries
    failed: list | None = [] if strict else None
    _load_epc(model, epc_file, raw, failed)
    if failed:
        name, e = failed[0]
        raise DamagedEPC(f"its member {name} cannot be loaded ({type(e).__name__}: {e})")
    return model


def _load_epc(model, epc_file: str, raw: dict | None = None, failed: list | None = None) -> None:
    """resqpy's _load_epc(model, epc_file, full_load=True, epc_subdir=None, copy_from=None)."""
    if not epc_file.endswith('.epc'):
        epc_file += '.epc'
    model.set_epc_file_and_directory(epc_file)
    names, members = _read_members(epc_file)
    if raw is not None:
        raw.update(members)
    m_f._set_part_names_in_forests(model, None, names)
    model.main_tree = rqet.parse(io.BytesIO(_member(members, '[Content_Types].xml')))
    model.main_root = model.main_tree.getroot()
    for child in model.main_root:
        _complete_forest_entry(model, members, child, failed)
    if model.rels_present:
        for name in names:
            if name.startswith('_rels/'):
                if not _load_part(model, members, name, is_rels=True, failed=failed):
                    m_f._fell_part(model, name)
    else:
        assert len(model.rels_forest) == 0
    m_f._tidy_up_forests(model)
    for uuid_int, part in model.uuid_part_dict.items():
        add_uuid_relations(model, uuid_int, part)
    for uuid_int, part in model.uuid_part_dict.items():
        m_f._add_uuid_soft_relations(model, uuid_int, part)


def _read_members(epc_file: str) -> tuple[list[str], dict]:
    """Every member of the zip, by name, from one read of the file."""
    with open(epc_file, 'rb') as f:
        data = f.read()
    with zf.ZipFile(io.BytesIO(data)) as epc:
        infos = epc.infolist()
        names = [info.filename for info in infos]
        members: dict[str, bytes | Exception] = {}
        for info in infos:
            try:
                body = _stored_member(data, info)
                members[info.filename] = body if body is not None else epc.read(info)
            except (zf.BadZipFile, OSError, ValueError) as e:
                members[info.filename] = e     # raised where resqpy's read of this member raises
    return names, members


def _member(members: dict, name: str) -> bytes:
    body = members[name]
    if isinstance(body, Exception):
        raise body
    return body


def _stored_member(data: bytes, info: zf.ZipInfo) -> bytes | None:
    """The bytes of an uncompressed, unencrypted member, or None to let zipfile read it."""
    if info.compress_type != zf.ZIP_STORED or info.flag_bits & 0x1:
        return None
    at = info.header_offset
    header = data[at:at + 30]
    if len(header) < 30 or header[:4] != b'PK\x03\x04':
        return None
    name_length, extra_length = struct.unpack('<HH', header[26:30])
    start = at + 30 + name_length + extra_length
    body = data[start:start + info.compress_size]
    if len(body) != info.file_size or zlib.crc32(body) != info.CRC:
        raise zf.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")
    return body


def _complete_forest_entry(model, members, child, failed: list | None = None) -> None:
    """resqpy's _complete_forest_entry_for_part (full load, no subdirectory)."""
    tag = rqet.stripped_of_prefix(child.tag)
    if tag == 'Override':
        attrib = child.attrib
        part_name = attrib['PartName']
        if part_name[0] == '/':
            part_name = part_name[1:]
        part_type = rqet.content_type(attrib['ContentType'])
        if part_name.startswith('docProps'):
            if part_name not in model.other_forest:
                log.warning('docProps entry in Content_Types does not exist as part in epc: ' + part_name)
                return
            model.other_forest[part_name] = (part_type, None)
        else:
            if part_name not in model.parts_forest:
                log.warning('entry in Content_Types does not exist as part in epc: ' + part_name)
                return
            part_uuid = model.parts_forest[part_name][1]
            model.parts_forest[part_name] = (part_type, part_uuid, None)
            m_f._add_to_object_parts(model, part_name)
        if not _load_part(model, members, part_name, failed=failed):
            m_f._fell_part(model, part_name)
    elif tag == 'Default':
        if 'Extension' in child.attrib.keys() and child.attrib['Extension'] == 'rels':
            assert not model.rels_present
            model.rels_present = True


def _load_part(model, members, part_name, is_rels=None, failed: list | None = None) -> bool:
    """resqpy's _load_part, parsing the member's bytes already read. `failed`: where a part that
    cannot be loaded goes (name, exception) instead of resqpy's log line."""
    if part_name.startswith('/'):
        part_name = part_name[1:]
    try:
        if is_rels is None:
            is_rels = part_name.endswith('.rels')
        is_other = not is_rels and part_name.startswith('docProps')
        part_type = None
        part_uuid = None
        if is_rels:
            if part_name in model.rels_forest:
                (part_uuid, _) = model.rels_forest[part_name]
            if part_uuid is None:
                part_uuid = rqet.uuid_in_part_name(part_name)
        elif is_other:
            (part_type, _) = model.other_forest[part_name]
        else:
            (part_type, part_uuid, _) = model.parts_forest[part_name]
        part_tree = rqet.parse(io.BytesIO(_member(members, part_name)))
        if is_rels:
            model.rels_forest[part_name] = (part_uuid, part_tree)
        elif is_other:
            model.other_forest[part_name] = (part_type, part_tree)
        else:
            uuid_from_tree = rqet.uuid_for_part_root(part_tree.getroot())
            if part_uuid is None:
                part_uuid = uuid_from_tree
            elif uuid_from_tree is not None:
                assert bu.matching_uuids(part_uuid, uuid_from_tree)
            model.parts_forest[part_name] = (part_type, part_uuid, part_tree)
            m_f._add_to_object_parts(model, part_name)
            m_f._set_uuid_to_part(model, part_name, part_uuid)
            if model.crs_uuid is None and part_type == 'obj_LocalDepth3dCrs':
                model.crs_uuid = part_uuid
        return True
    except Exception as e:   # noqa: BLE001 - as resqpy: log, drop the part, go on
        if failed is not None and _merged_from(part_name):
            failed.append((part_name, e))
        else:
            log.exception('(okay to continue?) failed to load part: ' + part_name)
        return False


def _merged_from(part_name: str) -> bool:
    """Is this member one a merge reads: an object part or its rels? Not docProps, the package's
    _rels/.rels, nor a folder entry ('_rels/') that a zip tool other than resqpy's writer adds and
    resqpy's load skips: losing those loses nothing of the task's output."""
    if part_name.endswith('/') or part_name.startswith('docProps'):
        return False
    return part_name.startswith('_rels/obj_') if part_name.startswith('_rels/') else True


def add_uuid_relations(model, uuid_int: int, part: str) -> None:
    """resqpy's _add_uuid_relations with the references found by obj_references."""
    if "EpcExternalPart" in part:
        return
    root = model.parts_forest[part][2].getroot()
    rels = model.uuid_rels_dict
    for ref_node in obj_references(root):
        if "EpcExternalPart" in rqet.find_tag_text(ref_node, "ContentType"):
            continue
        ref_uuid_int = int(rqet.find_tag_text(ref_node, "UUID").replace('-', ''), 16)
        value = rels.get(uuid_int)
        if value is None:
            rels[uuid_int] = ({ref_uuid_int}, set(), set())
        else:
            value[0].add(ref_uuid_int)
        ref_value = rels.get(ref_uuid_int)
        if ref_value is None:
            rels[ref_uuid_int] = (set(), {uuid_int}, set())
        else:
            ref_value[1].add(uuid_int)
