"""What a RESQML model holds, as `resqmp batch` needs it: a grid chosen by uuid or title, and the
surfaces, well trajectories and grid column properties a batch makes one task each for.

Models are read with resqpy (any EPC resqpy reads, whoever wrote it). Parts come in the model's
part order (the order of its [Content_Types].xml), so a batch written twice from one model is the
same batch. Every problem is a BatchError naming the EPC and what was expected.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from resqmp.errors import BatchError
from resqmp.outputs import left_aside_hint

GRID_TYPE = "IjkGridRepresentation"
SURFACE_TYPES = {"triangulated": ("TriangulatedSetRepresentation",), "pointset": ("PointSetRepresentation",),
                 "all": ("TriangulatedSetRepresentation", "PointSetRepresentation")}
TRAJECTORY_TYPE = "WellboreTrajectoryRepresentation"
# a points property holds xyz per element, not one value per column: no mesh from it
COLUMN_PROPERTY_TYPES = ("ContinuousProperty", "DiscreteProperty", "CategoricalProperty")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SHOWN = 5          # titles or uuids listed in an error before "..."


@dataclass(frozen=True)
class Part:
    uuid: str
    title: str
    obj_type: str


@dataclass(frozen=True)
class Grid:
    epc: Path
    part: Part
    kind: str           # "aligned RegularGrid", "RegularGrid" (not aligned), "IjkGrid" (corner-point)

    @property
    def is_aligned_regular(self) -> bool:
        return self.kind == "aligned RegularGrid"


def open_model(epc: str | Path, role: str):
    """The resqpy Model of an EPC file; role ('grid EPC', 'surface EPC'...) names it in errors."""
    import resqpy.model as rq
    path = Path(epc).expanduser()
    if not path.exists():
        raise BatchError(f"{role} {epc}: not found{left_aside_hint(path)}")
    if not path.is_file():
        raise BatchError(f"{role} {epc}: not a file")
    try:
        return rq.Model(str(path.resolve()), quiet=True)
    except Exception as e:   # noqa: BLE001 - resqpy raises anything from zipfile, lxml, its asserts
        raise BatchError(f"{role} {epc}: not a readable EPC file ({type(e).__name__}: {e})") from None


def split_grid_spec(spec: str) -> tuple[str, str | None]:
    """'GRID.epc' or 'GRID.epc:UUID_OR_TITLE' -> (epc, selector). The EPC is the shortest prefix
    before a ':' that is an existing file, so titles may hold colons."""
    if Path(spec).expanduser().is_file():
        return spec, None
    for at in (i for i, c in enumerate(spec) if c == ":"):
        if Path(spec[:at]).expanduser().is_file():
            return spec[:at], spec[at + 1:] or None
    epc, sep, selector = spec.partition(".epc:")
    return (epc + ".epc", selector or None) if sep else (spec, None)


def parts_of(model, obj_types) -> list[Part]:
    """Parts of the given types, in the model's part order."""
    found = []
    for part in model.parts():
        obj_type = model.type_of_part(part, strip_obj=True)
        if obj_type in obj_types:
            uuid = str(model.uuid_for_part(part))
            found.append(Part(uuid=uuid, title=model.citation_title_for_part(part) or uuid, obj_type=obj_type))
    return found


def _listing(parts: list[Part]) -> str:
    shown = ", ".join(f"{p.title!r} {p.uuid}" for p in parts[:_SHOWN])
    return shown + (f", ... ({len(parts)} in all)" if len(parts) > _SHOWN else "")


def select_grid(spec: str) -> Grid:
    """The IjkGrid named by 'GRID.epc[:UUID_OR_TITLE]' (no selector: the EPC's only grid)."""
    epc, selector = split_grid_spec(spec)
    model = open_model(epc, "grid EPC")
    grids = parts_of(model, (GRID_TYPE,))
    if selector is None:
        if len(grids) != 1:
            what = "no IjkGrid" if not grids else f"{len(grids)} IjkGrids ({_listing(grids)})"
            hint = "" if not grids else ": name one with --grid EPC:UUID or --grid EPC:TITLE"
            raise BatchError(f"grid EPC {epc}: holds {what}{hint}")
        chosen = grids[0]
    elif _UUID.fullmatch(selector):
        chosen = next((g for g in grids if g.uuid.lower() == selector.lower()), None)
        if chosen is None:
            other = model.part(uuid=selector.lower())
            what = f"is a {model.type_of_part(other, strip_obj=True)}, not an IjkGrid" if other else "is not a part of it"
            raise BatchError(f"grid EPC {epc}: {selector} {what} (grids there: {_listing(grids) or 'none'})")
    else:
        titled = [g for g in grids if g.title == selector]
        if len(titled) > 1:
            raise BatchError(f"grid EPC {epc}: the title {selector!r} matches {len(titled)} grids "
                             f"({', '.join(g.uuid for g in titled)}): name one by uuid, e.g. {epc}:{titled[0].uuid}")
        if not titled:
            raise BatchError(f"grid EPC {epc}: no grid titled {selector!r} (grids there: {_listing(grids) or 'none'})")
        chosen = titled[0]
    return Grid(epc=Path(epc).expanduser().resolve(), part=chosen, kind=_grid_kind(model, chosen))


def _grid_kind(model, part: Part) -> str:
    import resqpy.grid as grr
    try:
        grid = grr.any_grid(model, uuid=part.uuid, find_properties=False, load_inactive=False)
    except Exception as e:   # noqa: BLE001 - a grid resqpy cannot load cannot be a batch's grid
        raise BatchError(f"grid {part.title!r} {part.uuid}: resqpy cannot load it ({type(e).__name__}: {e})") from None
    if isinstance(grid, grr.RegularGrid):
        return "aligned RegularGrid" if grid.is_aligned else "RegularGrid"
    return "IjkGrid"


def select(parts: list[Part], title_regex: str | None, what: str, epc) -> list[Part]:
    """Parts whose title matches title_regex (re.search; None: all); none left is an error."""
    if title_regex is None:
        return parts
    pattern = re.compile(title_regex)
    chosen = [p for p in parts if pattern.search(p.title)]
    if not chosen:
        raise BatchError(f"{epc}: no {what} has a title matching --title {title_regex!r} "
                         f"({what}s there: {_listing(parts)})")
    return chosen


def surfaces(epc, surface_type: str, title_regex: str | None) -> list[Part]:
    model = open_model(epc, "surface EPC")
    found = parts_of(model, SURFACE_TYPES[surface_type])
    if not found:
        others = [t for kind, types in SURFACE_TYPES.items() for t in types
                  if kind != "all" and t not in SURFACE_TYPES[surface_type] and parts_of(model, (t,))]
        hint = f"; it holds {' and '.join(others)} parts: see --type" if others else ""
        raise BatchError(f"surface EPC {epc}: holds no surfaces of --type {surface_type} "
                         f"({' or '.join(SURFACE_TYPES[surface_type])}){hint}")
    return select(found, title_regex, "surface", epc)


def trajectories(epc, title_regex: str | None) -> list[Part]:
    model = open_model(epc, "trajectory EPC")
    found = parts_of(model, (TRAJECTORY_TYPE,))
    if not found:
        raise BatchError(f"trajectory EPC {epc}: holds no well trajectories ({TRAJECTORY_TYPE})")
    return select(found, title_regex, "trajectory", epc)


def column_properties(epc, grid: Grid, title_regex: str | None) -> list[Part]:
    """Properties on the grid with one value per column (indexable element 'columns', count 1)."""
    import resqpy.olio.xml_et as rqet
    model = open_model(epc, "property EPC")
    found = []
    for part in parts_of(model, COLUMN_PROPERTY_TYPES):
        root = model.root_for_uuid(part.uuid)
        support = model.supporting_representation_for_part(model.part(uuid=part.uuid))
        if (rqet.find_tag_text(root, "IndexableElement") == "columns" and support is not None
                and str(support).lower() == grid.part.uuid.lower()
                and int(rqet.find_tag_text(root, "Count") or 1) == 1):
            found.append(part)
    if not found:
        raise BatchError(f"property EPC {epc}: holds no column property of grid {grid.part.title!r} {grid.part.uuid} "
                         "(a property with indexable element 'columns' and count 1 supported by that grid)")
    return select(found, title_regex, "column property", epc)
