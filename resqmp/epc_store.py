"""Writing the recombined EPC: what resqpy's ``Model.store_epc`` writes, entry for entry, with the
XML of parts serialised as each task's merge ends.

A copied part's XML no longer changes, so it is serialised once, right after its task's merge,
while other tasks still run; a rels part is serialised then too and written again only if a
later relationship changed it. Publishing after the last task then costs little more than
writing bytes into the zip.

With a spill file (the Recombiner's, in its staging folder), those bytes are not kept in memory,
and neither are the trees they were serialised from: right after serialising, each new part's
tree and rels tree is replaced in the model's forest by a ``SpilledTree`` naming where its bytes
are in the file. The launcher then holds, per task, a few small Python objects instead of every
part's lxml tree. A spilled tree is given back the moment anything uses it as a tree (resqpy
included: its catalogue, consolidation, relationship and HDF5 code all call ``getroot()`` on the
forest's entry): its bytes are parsed, as resqpy's ``load_part`` parses a part, the tree is put
back in the forest and stays there. So a part is parsed again at most once, and only a resident
that a later task reads comes back (the CRS or grid every task refers to, or consolidates into).
resqpy's own reload of a part whose tree is None reads ``model.epc_file``, which is not written
before the publish (or, adding to an existing model, does not hold the new parts); and resqpy
calls ``getroot()`` on forest entries without checking for None, hence a stand-in, not None.

The tree parsed back reads as the one serialised: resqpy's writer drops or rewrites only what it
did when the task's own EPC was written (blank text and tails; an empty Title written as
'untitled'), and the task model the part was copied from was parsed from that file; the merge
itself changes only uuids in it. A part's bytes are final, so it is written from them even once
its tree is back; a rels part that comes back and then changes is serialised again at the
publish, from its tree, as before.
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import zipfile as zf
from pathlib import Path

import resqpy.model._forestry as m_f
import resqpy.olio.xml_et as rqet
from resqpy.olio.xml_namespaces import curly_namespace as ns

log = logging.getLogger(__name__)


class SpillFile:
    """Bytes appended to a file and read back by (offset, length)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "xb+")     # only ours: never a file already there
        self._end = 0
        self._unflushed = False

    def append(self, data: bytes) -> int:
        offset = self._end
        self._file.write(data)
        self._end += len(data)
        self._unflushed = True
        return offset

    def read(self, offset: int, length: int) -> bytes:
        if self._unflushed:
            self._file.flush()
            self._unflushed = False
        data = os.pread(self._file.fileno(), length, offset)
        if len(data) != length:
            raise OSError(f"spill file {self.path}: {length} bytes expected at {offset}, {len(data)} read")
        return data

    def close(self) -> None:
        self._file.close()


class SpilledTree:
    """In a model's parts or rels forest in place of a part's XML tree, whose bytes are in the
    spill file. Used as a tree (getroot(), or anything else a tree has), it puts the parsed tree
    back in the forest and answers from it."""

    __slots__ = ("owner", "name", "offset", "length")

    def __init__(self, owner: "SerialisedParts", name: str, offset: int, length: int):
        self.owner, self.name, self.offset, self.length = owner, name, offset, length

    def data(self) -> bytes:
        return self.owner.spill.read(self.offset, self.length)

    def getroot(self):
        return self.owner._restore(self).getroot()

    def __getattr__(self, attr):
        return getattr(self.owner._restore(self), attr)


class SerialisedParts:
    """Serialised XML of `model`'s parts, kept up to date as parts and relationships are added.
    With `spill` (a path, not yet existing), new parts' bytes and trees leave memory (see above)."""

    def __init__(self, model, spill: str | Path | None = None):
        self.model = model
        # part name -> serialised XML (final): bytes, or a SpilledTree naming them in the spill file
        self._xml: dict[str, bytes | SpilledTree] = {}
        # rels part -> (children, serialised: bytes or SpilledTree)
        self._rels: dict[str, tuple[int, bytes | SpilledTree]] = {}
        self._parts_seen = len(model.parts_forest)
        self._given: dict[str, bytes] = {}                 # new part -> its XML, known without serialising
        self.spill = SpillFile(spill) if spill is not None else None
        self.restored = 0                                  # spilled trees parsed back (for tests and bench)
        # With a spill file, the [Content_Types].xml Override entries of parts added since
        # `_fixed` children of the main tree: (PartName, ContentType) each, in order, instead of an
        # lxml element each (~800 bytes with its two attributes: 3 KB a find-faces task, for the
        # whole run). Written as resqpy's writer writes them (see _main_xml). Those resqpy adds
        # after `_fixed` children join them (_adopt_overrides); None: nothing pending or adopted.
        self._overrides: list[tuple[str, str]] = []
        self._fixed: int | None = len(model.main_root) if spill is not None and model.main_root is not None else None

    def rels_changed(self, rels_name: str) -> None:
        """A relationship was added to (or the tree of) this rels part replaced: serialise again."""
        self._rels.pop(rels_name, None)

    def given(self, part_name: str, xml: bytes) -> None:
        """The XML of a part just added, as it would serialise (a group partial's stored bytes)."""
        self._given[part_name] = xml

    def add_part(self, part_name: str, content_type: str, uuid, xml: bytes, rels: bytes) -> None:
        """A new object part and its rels part, known by their final XML (resqmp.splice): what
        resqpy's _add_part puts in the model, the trees spilled (or, for XML that would not
        serialise back to the same bytes, parsed and kept), nothing serialised again."""
        model = self.model
        assert self._parts_seen == len(model.parts_forest), "parts added but not serialised"
        if self.spill is not None and round_trips(xml):
            tree = self._spilled(part_name, xml)
        else:
            tree = rqet.parse(io.BytesIO(xml))
            self._xml[part_name] = xml
        model.parts_forest[part_name] = (content_type, uuid, tree)
        m_f._add_to_object_parts(model, part_name)
        m_f._set_uuid_to_part(model, part_name, uuid)
        ct = 'application/x-resqml+xml;version=2.0;type=' + content_type
        if self.spill is not None:
            self._adopt_overrides()          # after those resqpy added since: the order is kept
            if self._fixed is None:
                self._fixed = len(model.main_root)
            self._overrides.append((part_name, ct))
        else:
            override = rqet.SubElement(model.main_root, ns['content_types'] + 'Override')
            override.set('PartName', part_name)
            override.set('ContentType', ct)
        rels_name = rqet.rels_part_name_for_part(part_name)
        if self.spill is not None and round_trips(rels):
            rels_tree = self._spilled(rels_name, rels)
        else:
            rels_tree = rqet.parse(io.BytesIO(rels))
            self._rels[rels_name] = (len(rels_tree.getroot()), rels)
        model.rels_forest[rels_name] = (uuid, rels_tree)
        self._parts_seen += 1

    def serialise_new_parts(self) -> list[str]:
        """Serialise the XML of parts added since the last call, and their rels. With a spill
        file, their bytes go there and their trees leave the forests; returns the rels parts
        so spilled."""
        model = self.model
        forest = model.parts_forest
        n = len(forest)
        given, self._given = self._given, {}
        if n < self._parts_seen:          # parts were removed: nothing cached can be trusted
            self._xml.clear()
            self._rels.clear()
            self._parts_seen = n
            return []
        new = list(itertools.islice(reversed(forest), n - self._parts_seen))
        self._parts_seen = n
        if self.spill is not None:
            self._adopt_overrides()
        spilled_rels = []
        for part_name in reversed(new):
            entry = forest[part_name]
            part_tree = entry[2]
            if part_tree is None or isinstance(part_tree, SpilledTree):
                continue
            xml = given.get(part_name)
            if xml is None:
                xml = _serialised(part_tree, standalone=None)
            if self.spill is None or not round_trips(xml):
                self._xml[part_name] = xml
            else:
                forest[part_name] = (entry[0], entry[1], self._spilled(part_name, xml))
            rels_name = rqet.rels_part_name_for_part(part_name)
            rels_entry = model.rels_forest.get(rels_name) if model.rels_present else None
            if rels_entry is not None and rels_entry[1] is not None and not isinstance(rels_entry[1], SpilledTree):
                xml = _serialised(rels_entry[1], standalone='yes')
                if self.spill is None or not round_trips(xml):
                    self._rels[rels_name] = (len(rels_entry[1].getroot()), xml)
                else:
                    self._rels.pop(rels_name, None)
                    model.rels_forest[rels_name] = (rels_entry[0], self._spilled(rels_name, xml))
                    spilled_rels.append(rels_name)
        return spilled_rels

    def _spilled(self, name: str, xml: bytes) -> SpilledTree:
        return SpilledTree(self, name, self.spill.append(xml), len(xml))

    def _restore(self, spilled: SpilledTree):
        """The tree of a spilled part, parsed and back in its forest (where it stays)."""
        model, name = self.model, spilled.name
        is_rels = name.endswith('.rels')
        forest = model.rels_forest if is_rels else model.parts_forest
        entry = forest.get(name)
        if entry is not None and entry[-1] is not spilled:
            return entry[-1]                      # back already (or replaced since)
        tree = rqet.parse(io.BytesIO(spilled.data()))       # as resqpy's load_part parses a part
        self.restored += 1
        if entry is None:
            return tree                           # no longer in the model: nothing to put back
        if is_rels:
            forest[name] = (entry[0], tree)
            self._rels[name] = (len(tree.getroot()), spilled)     # until a relationship is added
        else:
            forest[name] = (entry[0], entry[1], tree)
            self._xml[name] = spilled             # final: written from its bytes
        return tree

    def change_filename_in_hdf5_rels(self, new_hdf5_filename: str) -> None:
        """resqpy's Model.change_filename_in_hdf5_rels(name), without bringing back the trees of
        spilled rels parts that have no HDF5 file relationship (all but the HDF5 proxy's); a rels
        part changed is serialised again when stored."""
        model = self.model
        count = 0
        for rels_name, (_, tree) in list(model.rels_forest.items()):
            if isinstance(tree, SpilledTree) and b'Hdf5File' not in tree.data():
                continue
            changed = 0
            for child in tree.getroot():
                if child.attrib['Id'] == 'Hdf5File' and child.attrib['TargetMode'] == 'External':
                    child.attrib['Target'] = new_hdf5_filename
                    changed += 1
            if changed:
                self.rels_changed(rels_name)
                count += changed
        log.info(f'{count} hdf5 filename{"" if count == 1 else "s"} set to: {new_hdf5_filename}')
        if count > 0:
            model.set_modified()

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
                self._write_main(main_xml)
            for part_name, (_, _, part_tree) in model.parts_forest.items():
                if part_tree is None:
                    log.warning('No xml tree present to write for part: ' + part_name)
                    continue
                cached = part_tree if isinstance(part_tree, SpilledTree) else self._xml.get(part_name)
                if part_name[0] == '/':
                    part_name = part_name[1:]
                with epc.open(part_name, mode='w') as part_xml:
                    if cached is not None:
                        part_xml.write(_bytes(cached))
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
                    with epc.open(part_name, mode='w') as part_xml:
                        if isinstance(part_tree, SpilledTree):
                            part_xml.write(part_tree.data())
                            continue
                        cached = self._rels.get(part_name)
                        if cached is not None and cached[0] == len(part_tree.getroot()):
                            part_xml.write(_bytes(cached[1]))
                        else:
                            rqet.write_xml(part_xml, part_tree, standalone='yes')
        model.set_epc_file_and_directory(epc_file)
        model.modified = False

    def _adopt_overrides(self) -> None:
        """Override elements appended to the main tree after the pending ones (by resqpy's
        _add_part, copying a part the slow way) join them, in order. Anything else there (not
        seen: resqpy adds only Overrides while merging) puts every pending entry back in the
        tree as an element, before it, and nothing is pending any more."""
        if self._fixed is None:
            return
        root = self.model.main_root
        later = root[self._fixed:]
        if not later:
            return
        if all(_plain_override(e) for e in later):
            for element in later:
                self._overrides.append((element.get('PartName'), element.get('ContentType')))
                root.remove(element)
        else:
            self._materialise_overrides()

    def _materialise_overrides(self) -> None:
        """The pending Override entries as elements of the main tree, where they belong."""
        root = self.model.main_root
        for k, (part_name, ct) in enumerate(self._overrides):
            element = rqet.Element(ns['content_types'] + 'Override')
            element.set('PartName', part_name)
            element.set('ContentType', ct)
            root.insert(self._fixed + k, element)
        self._overrides, self._fixed = [], None

    def _main_xml(self) -> bytes:
        """[Content_Types].xml as store_epc writes it (for tests)."""
        buf = io.BytesIO()
        self._write_main(buf)
        return buf.getvalue()

    def _write_main(self, fp) -> None:
        """[Content_Types].xml as resqpy's writer makes it from the main tree, with the pending
        Override entries written into it where their elements would be, a few thousand lines at
        a time (each as that writer writes an Override appended to this root: checked on the first
        against the writer itself, on a root like this one; if it differs, the entries become
        elements and the writer writes them all)."""
        model = self.model
        self._adopt_overrides()
        if self._overrides and len(model.main_root) != self._fixed:
            self._materialise_overrides()
        buf = io.BytesIO()
        rqet.write_xml(buf, model.main_tree, standalone='yes')
        main = buf.getvalue()
        if self._overrides:
            closing = main.rfind(b'</')
            if closing <= 0 or main[closing - 1:closing] != b'\n' or not _written_as_text(
                    model.main_root, _override_line(*self._overrides[0]), *self._overrides[0]):
                self._materialise_overrides()
                self._write_main(fp)
                return
            fp.write(main[:closing])
            for k in range(0, len(self._overrides), 4096):
                fp.write(b''.join(_override_line(*entry) for entry in self._overrides[k:k + 4096]))
            main = main[closing:]
        fp.write(main)

    def close(self) -> None:
        """Close the spill file (the model's spilled trees can no longer come back)."""
        if self.spill is not None:
            self.spill.close()


def _plain_override(element) -> bool:
    """An Override element with its two attributes only, as resqpy's _add_part makes one."""
    return (element.tag == ns['content_types'] + 'Override' and len(element) == 0 and not element.text
            and not element.tail and list(element.attrib.keys()) == ['PartName', 'ContentType'])


def _override_line(part_name: str, ct: str) -> bytes:
    """The line resqpy's write_xml_node writes for an Override child of the main tree's root
    (attribute values as they are; an obj_ part name given a leading '/')."""
    if part_name.startswith('obj_'):
        part_name = '/' + part_name
    return f'   <Override PartName="{part_name}" ContentType="{ct}"/>\n'.encode()


def _written_as_text(root, line: bytes, part_name: str, ct: str) -> bool:
    """Does resqpy's writer write that Override, appended to `root`, as `line` inserted before
    the root's closing tag? Checked on a root of the same tag and attributes (what decides the
    namespace declarations the writer gives a child: a root in no namespace, or in another one,
    makes it declare the content types namespace on every Override), with the entry once and twice."""
    written = []
    for count in (1, 2):
        shell = rqet.Element(root.tag, attrib=dict(root.attrib))
        for _ in range(count):
            element = rqet.SubElement(shell, ns['content_types'] + 'Override')
            element.set('PartName', part_name)
            element.set('ContentType', ct)
        buf = io.BytesIO()
        rqet.write_xml_node(buf, shell)
        written.append(buf.getvalue())
    once, twice = written
    closing = once.rfind(b'</')
    return closing > 0 and once[closing - 1:closing] == b'\n' and once[:closing] + line + once[closing:] == twice


def round_trips(xml: bytes) -> bool:
    """Would serialising the tree parsed from `xml` give `xml` back? resqpy's writer escapes text
    but writes attribute values as they are, and a parser turns CR LF into LF: bytes with an
    entity or a CR may come back otherwise (or not parse), so such a part is serialised from its
    tree, and its tree is kept (not spilled)."""
    return b'&' not in xml and b'\r' not in xml


def _bytes(cached) -> bytes:
    return cached.data() if isinstance(cached, SpilledTree) else cached


def _serialised(tree, standalone) -> bytes:
    buf = io.BytesIO()
    rqet.write_xml(buf, tree, standalone=standalone)
    return buf.getvalue()
