"""Writing the recombined EPC: what resqpy's ``Model.store_epc`` writes, entry for entry, with the
XML of parts serialised as each task's merge ends.

A copied part's XML no longer changes, so it is serialised once, right after its task's merge,
while other tasks still run; a rels part is serialised then too and written again only if a
later relationship changed it. Publishing after the last task then costs little more than
writing bytes into the zip.
"""
from __future__ import annotations

import io
import itertools
import logging
import zipfile as zf

import resqpy.olio.xml_et as rqet

log = logging.getLogger(__name__)


class SerialisedParts:
    """Serialised XML of `model`'s parts, kept up to date as parts and relationships are added."""

    def __init__(self, model):
        self.model = model
        self._xml: dict[str, bytes] = {}                   # part name -> serialised XML (final)
        self._rels: dict[str, tuple[int, bytes]] = {}      # rels part -> (children, serialised)
        self._parts_seen = len(model.parts_forest)
        self._given: dict[str, bytes] = {}                 # new part -> its XML, known without serialising

    def rels_changed(self, rels_name: str) -> None:
        """A relationship was added to (or the tree of) this rels part replaced: serialise again."""
        self._rels.pop(rels_name, None)

    def given(self, part_name: str, xml: bytes) -> None:
        """The XML of a part just added, as it would serialise (a group partial's stored bytes)."""
        self._given[part_name] = xml

    def serialise_new_parts(self) -> None:
        """Serialise the XML of parts added since the last call, and their rels."""
        model = self.model
        forest = model.parts_forest
        n = len(forest)
        given, self._given = self._given, {}
        if n < self._parts_seen:          # parts were removed: nothing cached can be trusted
            self._xml.clear()
            self._rels.clear()
            self._parts_seen = n
            return
        new = list(itertools.islice(reversed(forest), n - self._parts_seen))
        self._parts_seen = n
        for part_name in reversed(new):
            part_tree = forest[part_name][2]
            if part_tree is None:
                continue
            xml = given.get(part_name)
            self._xml[part_name] = xml if xml is not None else _serialised(part_tree, standalone=None)
            rels_name = rqet.rels_part_name_for_part(part_name)
            entry = model.rels_forest.get(rels_name) if model.rels_present else None
            if entry is not None and entry[1] is not None:
                self._rels[rels_name] = (len(entry[1].getroot()), _serialised(entry[1], standalone='yes'))

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
                cached = self._xml.get(part_name)
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
                    cached = self._rels.get(part_name)
                    with epc.open(part_name, mode='w') as part_xml:
                        if cached is not None and cached[0] == len(part_tree.getroot()):
                            part_xml.write(cached[1])
                        else:
                            rqet.write_xml(part_xml, part_tree, standalone='yes')
        model.set_epc_file_and_directory(epc_file)
        model.modified = False


def _serialised(tree, standalone) -> bytes:
    buf = io.BytesIO()
    rqet.write_xml(buf, tree, standalone=standalone)
    return buf.getvalue()
