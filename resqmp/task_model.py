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
That also lets task models share trees: given a ``TreeCache`` (the Recombiner keeps one), a
member whose bytes an earlier load already parsed twice is not parsed again. Its tree, and what
the load derives from the tree alone (the uuid in its root, its references, a rels part's
targets), are the ones parsed from the same bytes before. Every task of a batch carries the
same CRS, grid and properties parts, byte for byte: about half of each task EPC.
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


class _Parsed:
    """A member parsed, and what the load derives from its tree alone (computed when first asked)."""

    __slots__ = ("tree", "uuid", "refs", "soft")

    def __init__(self, tree):
        self.tree = tree
        self.uuid = self.refs = self.soft = _UNSET


_UNSET = object()


class TreeCache:
    """Parsed members by their bytes, shared by the task models loaded with it (read-only trees:
    see the module's docstring). A member is kept once its bytes have been seen twice, so the
    parts every task repeats are kept and a task's own parts are not; `once` bounds the bytes
    remembered as seen once, `kept` the members kept. Equal bytes parse to equal trees, so a
    kept member loads as a fresh parse would; bytes that failed to parse are never kept."""

    def __init__(self, once: int = 4096, kept: int = 1024):
        self.max_once, self.max_kept = once, kept
        self._once: dict[bytes, None] = {}
        self._kept: dict[bytes, _Parsed] = {}
        self.hits = 0                       # members not parsed again (for tests and bench)

    def parsed(self, body: bytes) -> _Parsed:
        found = self._kept.get(body)
        if found is not None:
            self.hits += 1
            return found
        parsed = _Parsed(rqet.parse(io.BytesIO(body)))
        if body in self._once:
            del self._once[body]
            if len(self._kept) < self.max_kept:
                self._kept[body] = parsed
        else:
            if len(self._once) >= self.max_once:
                self._once.clear()
            self._once[body] = None
        return parsed


def _parse(body: bytes, cache: TreeCache | None) -> _Parsed:
    return cache.parsed(body) if cache is not None else _Parsed(rqet.parse(io.BytesIO(body)))


def load_task_model(epc_file: str, raw: dict | None = None, strict: bool = False, cache: TreeCache | None = None):
    """resqpy.model.Model(epc_file, quiet=True), read with the steps above. `raw`, if given, is
    filled with each member's bytes as stored (an exception for a member that could not be read).
    `strict`: a member that cannot be read or parsed raises DamagedEPC, where resqpy's load logs
    "okay to continue?" and drops the part (a merge would then go on without it). `cache`: trees
    shared with the other models loaded with it; the model's trees must then not be changed."""
    model = rq.Model(quiet=True)      # initialize() only: empty forests and dictionaries
    failed: list | None = [] if strict else None
    _load_epc(model, epc_file, raw, failed, cache)
    if failed:
        name, e = failed[0]
        raise DamagedEPC(f"its member {name} cannot be loaded ({type(e).__name__}: {e})")
    return model


def _load_epc(model, epc_file: str, raw: dict | None = None, failed: list | None = None,
              cache: TreeCache | None = None) -> None:
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
    parsed: dict[str, _Parsed] = {}       # part name -> its member parsed (trees in the forests)
    for child in model.main_root:
        _complete_forest_entry(model, members, child, failed, cache, parsed)
    if model.rels_present:
        for name in names:
            if name.startswith('_rels/'):
                if not _load_part(model, members, name, is_rels=True, failed=failed, cache=cache, parsed=parsed):
                    m_f._fell_part(model, name)
    else:
        assert len(model.rels_forest) == 0
    m_f._tidy_up_forests(model)
    for uuid_int, part in model.uuid_part_dict.items():
        _add_references(model, uuid_int, part, parsed)
    for uuid_int, part in model.uuid_part_dict.items():
        _add_soft_relations(model, uuid_int, part, parsed)


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


def _complete_forest_entry(model, members, child, failed: list | None = None, cache: TreeCache | None = None,
                           parsed: dict | None = None) -> None:
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
        if not _load_part(model, members, part_name, failed=failed, cache=cache, parsed=parsed):
            m_f._fell_part(model, part_name)
    elif tag == 'Default':
        if 'Extension' in child.attrib.keys() and child.attrib['Extension'] == 'rels':
            assert not model.rels_present
            model.rels_present = True


def _load_part(model, members, part_name, is_rels=None, failed: list | None = None, cache: TreeCache | None = None,
               parsed: dict | None = None) -> bool:
    """resqpy's _load_part, parsing the member's bytes already read (or taking them parsed from
    `cache`; `parsed` gets them by part name). `failed`: where a part that cannot be loaded goes
    (name, exception) instead of resqpy's log line."""
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
        member = _parse(_member(members, part_name), cache)
        part_tree = member.tree
        if is_rels:
            model.rels_forest[part_name] = (part_uuid, part_tree)
        elif is_other:
            model.other_forest[part_name] = (part_type, part_tree)
        else:
            if member.uuid is _UNSET:
                member.uuid = rqet.uuid_for_part_root(part_tree.getroot())
            uuid_from_tree = member.uuid
            if part_uuid is None:
                part_uuid = uuid_from_tree
            elif uuid_from_tree is not None:
                assert bu.matching_uuids(part_uuid, uuid_from_tree)
            model.parts_forest[part_name] = (part_type, part_uuid, part_tree)
            m_f._add_to_object_parts(model, part_name)
            m_f._set_uuid_to_part(model, part_name, part_uuid)
            if model.crs_uuid is None and part_type == 'obj_LocalDepth3dCrs':
                model.crs_uuid = part_uuid
        if parsed is not None:
            parsed[part_name] = member
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


def _add_references(model, uuid_int: int, part: str, parsed: dict) -> None:
    """add_uuid_relations(model, uuid_int, part) for a part just loaded: its references read
    from its tree once for all the models that share it."""
    if "EpcExternalPart" in part:
        return
    member = parsed.get(part)
    if member is None or member.tree is not model.parts_forest[part][2]:
        add_uuid_relations(model, uuid_int, part)
        return
    if member.refs is _UNSET:
        member.refs = _references(member.tree.getroot())
    _relate(model, uuid_int, member.refs)


def _relate(model, uuid_int: int, references) -> None:
    """resqpy's uuid_rels_dict entries for a part referring to each uuid int in `references`."""
    rels = model.uuid_rels_dict
    for ref_uuid_int in references:
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


def _references(root) -> tuple[int, ...]:
    """The uuid ints add_uuid_relations relates a part with this root to, in its order."""
    found = []
    for ref_node in obj_references(root):
        if "EpcExternalPart" in rqet.find_tag_text(ref_node, "ContentType"):
            continue
        found.append(int(rqet.find_tag_text(ref_node, "UUID").replace('-', ''), 16))
    return tuple(found)


def _add_soft_relations(model, uuid_int: int, part: str, parsed: dict) -> None:
    """resqpy's _add_uuid_soft_relations for a part just loaded: its rels part's targets read
    from the rels tree once for all the models that share it."""
    if "EpcExternalPart" in part:
        return
    rels_part = rqet.rels_part_name_for_part(part)
    member = parsed.get(rels_part)
    entry = model.rels_forest.get(rels_part)
    if member is None or entry is None or member.tree is not entry[1]:
        m_f._add_uuid_soft_relations(model, uuid_int, part)
        return
    if member.soft is _UNSET:
        member.soft = _soft_targets(member.tree.getroot())
    rels_sets = model.uuid_rels_dict.get(uuid_int)
    if rels_sets is None:
        return
    for relation_uuid_int in member.soft:
        if relation_uuid_int not in rels_sets[0] and relation_uuid_int not in rels_sets[1]:
            rels_sets[2].add(relation_uuid_int)


def _soft_targets(rels_root) -> tuple[int, ...]:
    """The targets resqpy's _add_uuid_soft_relations reads from a rels root (up to where it stops)."""
    if rels_root is None:
        return ()
    found = []
    for relation_node in rels_root:
        if rqet.stripped_of_prefix(relation_node.tag) != 'Relationship':
            break
        if 'Target' not in relation_node.attrib.keys():
            break
        relation_uuid_str = rqet.uuid_in_part_name(relation_node.attrib['Target'], return_uuid_str=True)
        if relation_uuid_str is None:
            break
        found.append(int(relation_uuid_str.replace('-', ''), 16))
    return tuple(found)


def add_uuid_relations(model, uuid_int: int, part: str) -> None:
    """resqpy's _add_uuid_relations with the references found by obj_references."""
    if "EpcExternalPart" in part:
        return
    _relate(model, uuid_int, _references(model.parts_forest[part][2].getroot()))
