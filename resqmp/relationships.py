"""Relationships between parts: resqpy's ``_create_reciprocal_relationship``, with indexed
duplicate checks.

resqpy scans every Relationship of a rels part before adding one, so adding the N-th connection
set's relationship to the one grid they all refer to costs O(N). Here each rels part's targets
are read once into a set and kept up to date; the XML added is the same.
"""
from __future__ import annotations

import logging
from typing import Callable

import resqpy.olio.xml_et as rqet
from resqpy.olio.xml_namespaces import curly_namespace as ns
from resqpy.olio.xml_namespaces import namespace as ns_url

log = logging.getLogger(__name__)

_XSI_TYPE = ns['xsi'] + 'type'
_NAMES_KEPT = 4096      # names remembered (then forgotten all at once: the hot ones come back)


class RelationshipIndex:
    """Adds reciprocal relationships to `model`'s rels parts; tells `on_change(rels part name)`
    after each change (the serialised copy of that rels part is then stale)."""

    def __init__(self, model, on_change: Callable[[str], None] | None = None):
        self.model = model
        self.on_change = on_change
        self._targets: dict[str, set[str]] = {}    # rels part name -> Targets of its Relationships
        # (uuid, xsi:type) of a part's root -> its part name and rels part name (the same strings
        # every time: the grid and CRS every task relates to are looked up again and again)
        self._names: dict[tuple[str, str], tuple[str, str]] = {}

    def forget(self, rels_name: str) -> None:
        """The rels part was replaced by a fresh tree: read its targets again when needed."""
        self._targets.pop(rels_name, None)

    def reciprocal(self, node_a, rel_type_a: str, node_b, rel_type_b: str, avoid_duplicates: bool = True) -> None:
        """As resqpy's Model.create_reciprocal_relationship(node_a, rel_type_a, node_b, rel_type_b)."""
        assert self.model.rels_present
        if node_a is None or node_b is None:
            log.error('attempt to create relationship with missing object')
            return
        uuid_a, part_name_a, rel_part_a, rel_root_a = self._rels_for(node_a)
        uuid_b, part_name_b, rel_part_b, rel_root_b = self._rels_for(node_b)
        if not avoid_duplicates or not self._has_target(rel_part_a, rel_root_a, part_name_b):
            self._add(rel_part_a, rel_root_a, uuid_b, rel_type_a, part_name_b)
        if not avoid_duplicates or not self._has_target(rel_part_b, rel_root_b, part_name_a):
            self._add(rel_part_b, rel_root_b, uuid_a, rel_type_b, part_name_a)

    def _rels_for(self, node):
        attrib = node.attrib
        uuid = attrib['uuid']
        key = (uuid, attrib[_XSI_TYPE])
        names = self._names.get(key)
        if names is None:
            obj_type = rqet.stripped_of_prefix(rqet.content_type(key[1]))
            part_name = rqet.part_name_for_object(obj_type, uuid)
            names = (part_name, rqet.rels_part_name_for_part(part_name))
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            self._names[key] = names
        part_name, rel_part_name = names
        _, rel_tree = self.model.rels_forest[rel_part_name]
        return uuid, part_name, rel_part_name, rel_tree.getroot()

    def _has_target(self, rel_part_name: str, rel_root, target: str) -> bool:
        targets = self._targets.get(rel_part_name)
        if targets is None:
            targets = {existing.attrib['Target'] for existing in rqet.list_of_tag(rel_root, 'Relationship')}
            self._targets[rel_part_name] = targets
        return target in targets

    def _add(self, rel_part_name: str, rel_root, rel_id, rel_type: str, target: str) -> None:
        rel = rqet.SubElement(rel_root, ns['rels'] + 'Relationship')
        rel.set('Id', _id_str(rel_id))
        rel.set('Type', ns_url['rels_ext'] + rel_type)
        rel.set('Target', target)
        targets = self._targets.get(rel_part_name)
        if targets is not None:
            targets.add(target)
        if self.on_change is not None:
            self.on_change(rel_part_name)


def _id_str(uuid) -> str:
    """The Id attribute resqpy writes for a relationship to `uuid`."""
    stringy = str(uuid)
    if not (rqet.pretend_to_be_fesapi or rqet.use_fesapi_quirks) or not stringy[0].isdigit():
        return stringy
    return '_' + stringy
