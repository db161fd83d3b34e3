"""`resqmp batch`: write a batch file from a model, one task per surface, trajectory or column property.

    faces   one find-faces task per surface: resqpy's regular wrapper for an aligned RegularGrid,
            resqmp.wrappers' find_faces_to_represent_surface_wrapper for any other IjkGrid
    wells   one blocked-well task per well trajectory (resqpy's wrapper takes any IjkGrid)
    mesh    one mesh task per column property of the grid (resqpy's wrapper needs an aligned
            RegularGrid and reads the properties from the grid's EPC)

Tasks come in the model's part order and are named by the part's title; what every task shares
is in `defaults`, with `--set KEY=VALUE` wrapper arguments checked against the wrapper's signature.
Paths below the batch file's folder are written relative to it. The file is checked as `launch`
would load it (resqmp.batch.load) before it appears, atomically; an existing file is replaced only
with force.
"""
from __future__ import annotations

import difflib
import inspect
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resqmp import datafile, model_parts
from resqmp.batch import SUPPLIED, load, resolve_wrapper
from resqmp.errors import BatchError, OutputError
from resqmp.outputs import create_new

REGULAR_FIND_FACES = "find_faces_to_represent_surface_regular"
ANY_GRID_FIND_FACES = "resqmp.wrappers:find_faces_to_represent_surface_wrapper"
BLOCKED_WELL = "blocked_well_from_trajectory"
MESH = "mesh_from_regular_grid_column_property"


@dataclass
class Plan:
    """A batch before it is written: what the file will hold and what to say about it."""
    wrapper: str
    defaults: dict[str, Any]
    tasks: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)      # header comment lines
    per_task: tuple[str, ...] = ()                      # keys the writer sets per task


def plan_faces(grid_spec: str, surfaces_epc: str, surface_type: str = "triangulated",
               title_regex: str | None = None) -> Plan:
    grid = model_parts.select_grid(grid_spec)
    found = model_parts.surfaces(surfaces_epc, surface_type, title_regex)
    if grid.is_aligned_regular:
        wrapper, why = REGULAR_FIND_FACES, "an aligned RegularGrid: resqpy's regular find-faces wrapper"
        # a required argument of resqpy's wrapper (realisation numbers for returned properties)
        defaults = {"use_index_as_realisation": False}
    else:
        wrapper, why = ANY_GRID_FIND_FACES, f"{_a(grid.kind)}: resqmp's find-faces wrapper for any IjkGrid"
        defaults = {}
    return Plan(wrapper=wrapper,
                defaults={"grid_epc": grid.epc, "grid_uuid": grid.part.uuid,
                          "surface_epc": Path(surfaces_epc).expanduser().resolve(), **defaults},
                tasks=[{"surface_uuid": p.uuid, "name": p.title} for p in found],
                notes=[f"grid {grid.part.title!r} {grid.part.uuid} is {why}",
                       _selection(f"surface of --type {surface_type}", surfaces_epc, title_regex)],
                per_task=("surface_uuid", "name"))


def plan_wells(grid_spec: str, trajectories_epc: str, title_regex: str | None = None) -> Plan:
    grid = model_parts.select_grid(grid_spec)
    found = model_parts.trajectories(trajectories_epc, title_regex)
    return Plan(wrapper=BLOCKED_WELL,
                defaults={"grid_epc": grid.epc, "grid_uuid": grid.part.uuid,
                          "trajectory_epc": Path(trajectories_epc).expanduser().resolve()},
                tasks=[{"trajectory_uuids": [p.uuid], "name": p.title} for p in found],
                notes=[f"grid {grid.part.title!r} {grid.part.uuid} ({_a(grid.kind)})",
                       _selection("well trajectory", trajectories_epc, title_regex)],
                per_task=("trajectory_uuids", "name"))


def plan_mesh(grid_spec: str, properties_epc: str | None = None,
              title_regex: str | None = None) -> Plan:
    grid = model_parts.select_grid(grid_spec)
    if not grid.is_aligned_regular:
        raise BatchError(f"grid {grid.part.title!r} {grid.part.uuid} in {grid.epc} is {_a(grid.kind)}: resqpy's "
                         f"{MESH} wrapper needs an aligned RegularGrid")
    source = properties_epc or str(grid.epc)
    found = model_parts.column_properties(source, grid, title_regex)
    if Path(source).expanduser().resolve() != grid.epc:
        # resqpy's mesh wrapper copies the properties from the grid's EPC: they must be there too
        in_grid_epc = {p.uuid for p in model_parts.parts_of(model_parts.open_model(grid.epc, "grid EPC"),
                                                            model_parts.COLUMN_PROPERTY_TYPES)}
        missing = [p for p in found if p.uuid not in in_grid_epc]
        if missing:
            raise BatchError(f"property {missing[0].title!r} {missing[0].uuid} of {source} is not in the grid's EPC "
                             f"{grid.epc}: resqpy's {MESH} wrapper reads the properties from the grid's EPC")
    return Plan(wrapper=MESH,
                defaults={"grid_epc": grid.epc, "grid_uuid": grid.part.uuid},
                tasks=[{"prop_uuids": [p.uuid], "name": p.title} for p in found],
                notes=[f"grid {grid.part.title!r} {grid.part.uuid} ({_a(grid.kind)})",
                       _selection("column property of the grid", source, title_regex)],
                per_task=("prop_uuids", "name"))


def _selection(what: str, epc, title_regex: str | None) -> str:
    titled = f" titled like {title_regex!r}" if title_regex else ""
    return f"one task per {what} in {epc}{titled}, in the model's part order"


def _a(kind: str) -> str:
    return ("an " if kind[0].lower() in "aeiou" else "a ") + kind + \
        (" (corner-point)" if kind == "IjkGrid" else "")


def parse_sets(items) -> dict[str, Any]:
    """`KEY=VALUE` items -> {KEY: value parsed as YAML}."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise BatchError(f"--set {item!r}: expected KEY=VALUE with KEY a keyword argument of the wrapper")
        try:
            # the rules of every data file resqmp reads (resqmp/datafile.py): 010 stays "010"
            values[key] = datafile.loads_yaml(raw) if raw.strip() else ""
        except datafile.DataError as e:
            raise BatchError(f"--set {item!r}: {e.problem}") from None
    return values


def apply_sets(plan: Plan, sets: dict[str, Any]) -> None:
    """Add --set values to the plan's defaults, each a keyword argument of the plan's wrapper."""
    if not sets:
        return
    _, function = resolve_wrapper(plan.wrapper)
    params = inspect.signature(function).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    given = set(plan.per_task) | {k for k in plan.defaults if k.endswith("_epc") or k == "grid_uuid"}
    settable = [n for n, p in params.items()
                if n not in SUPPLIED and n not in given and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for key, value in sets.items():
        if key in SUPPLIED:
            raise BatchError(f"--set {key}: supplied by resqmp for every task; remove it")
        if key in plan.per_task:
            raise BatchError(f"--set {key}: set for each task from the model's parts; select parts with --title")
        if key in ("grid_epc", "grid_uuid"):
            raise BatchError(f"--set {key}: given by --grid EPC[:UUID_OR_TITLE]")
        if key in plan.defaults and key.endswith("_epc"):
            raise BatchError(f"--set {key}: given by the command's EPC option")
        if key not in params and not takes_any:
            close = difflib.get_close_matches(key, settable, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            expected = f"expected one of: {', '.join(settable)}" if settable else "it takes none beyond those resqmp sets"
            raise BatchError(f"--set {key}: not an argument of wrapper {plan.wrapper} ({hint}{expected})")
        plan.defaults[key] = value


def _relative(value: Any, folder: Path) -> Any:
    """A path below the batch file's folder, relative to it; any other path absolute."""
    if not isinstance(value, Path):
        return value
    try:
        return value.relative_to(folder).as_posix()
    except ValueError:
        return str(value)


def render(plan: Plan, folder: Path, command: str) -> str:
    defaults = {k: _relative(v, folder) for k, v in plan.defaults.items()}
    doc = {"wrapper": plan.wrapper, "defaults": defaults, "tasks": plan.tasks}
    header = [f"written by: {command}", *plan.notes, "relative paths are relative to the folder holding this file"]
    text = "".join(f"# {line}\n" for line in header)
    # flow style for each task: one line per task
    text += yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, allow_unicode=True, width=10_000)
    if datafile.loads_yaml(text) != doc:   # guard: `launch` reads back the data it was written from
        raise AssertionError("batch text does not read back as written")
    return text


def write(plan: Plan, output: str | Path, command: str, force: bool = False) -> Path:
    """Write the plan at output atomically, after checking it as `launch` loads it; an existing
    output is replaced only with force. Returns the absolute path written."""
    out = Path(output).expanduser().absolute()
    folder = out.parent
    if not folder.is_dir():
        raise OutputError(f"batch file {out}: folder {folder} {'is not a directory' if folder.exists() else 'does not exist'}")
    if out.is_dir():
        raise OutputError(f"batch file {out}: is a directory")
    text = render(plan, folder.resolve(), command)
    tmp = str(folder / f".{out.name}.{secrets.token_hex(6)}.tmp")
    try:
        # not mkstemp: its 0600 would outlive the rename; the user's umask decides, as for any file
        fd = create_new(tmp)
    except OSError as e:
        raise OutputError(f"batch file {out}: cannot write in {folder} ({e.strerror})") from None
    try:
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise OutputError(f"batch file {out}: cannot write ({e.strerror})") from None
        try:
            batch = load(tmp)    # what launch will check: wrapper, arguments, EPCs, uuids
        except BatchError as e:
            raise BatchError(str(e).replace(str(Path(tmp).resolve()), str(out)).replace(tmp, str(out))) from None
        # before "exists": that message offers --force, which must never reach a file the batch reads
        _refuse_input(out, batch)
        if os.path.lexists(out) and not force:
            raise OutputError(f"batch file {out}: exists (use --force to replace it)")
        _publish(Path(tmp), out, force)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _refuse_input(out: Path, batch) -> None:
    """BATCH.yaml is none of the files the batch reads (an EPC, its .h5; also through a link or
    a hard link), whatever --force says: replacing one loses the user's model (launch's OUT rule)."""
    from resqmp.preflight import input_at
    label = input_at(out, batch)
    if label is not None:
        raise OutputError(f"batch file {out}: is an input of the batch, {label}; resqmp never replaces an "
                          f"input, not even with --force: choose another -o (e.g. a .yaml beside it)")


def _publish(tmp: Path, out: Path, force: bool) -> None:
    if force:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)          # fails if out appeared meanwhile: never replaces a file silently
    except FileExistsError:
        raise OutputError(f"batch file {out}: exists (use --force to replace it)") from None
    except OSError:                # a filesystem without hard links
        if out.exists():
            raise OutputError(f"batch file {out}: exists (use --force to replace it)") from None
        os.rename(tmp, out)


def suggested_output(batch_file: str | Path, stem: str | None = None) -> Path | None:
    """The --output the "run it:" line suggests for launching batch_file: STEM.epc beside it (STEM:
    the batch file's name without its suffix, unless given), else
    STEM-2.epc, STEM-3.epc... the first whose launch is sure to be safe: none of the files a launch
    writes for it (outputs.written_files) is an input of the batch (the batch file, an input EPC,
    its .h5), and each is absent, or that OUT is resqmp's own output of an earlier run (its report
    names it, no file there that resqmp did not write, no unfinished run's journal): a launch
    replaces it, as launching the batch again is meant to. None when no such name is found."""
    from resqmp import preflight
    from resqmp.outputs import journal_path, written_files
    batch_file = Path(batch_file).expanduser().absolute()
    batch = load(batch_file, check_inputs=False)
    if stem is None:
        stem = batch_file.name[:-len(batch_file.suffix)] if batch_file.suffix else batch_file.name
    for n in range(1, 1000):
        out = batch_file.with_name(f"{stem}.epc" if n == 1 else f"{stem}-{n}.epc")
        files = written_files(out).values()
        if not any(os.path.lexists(f) for f in files):
            return out
        if any(preflight.input_at(f, batch) for f in files if os.path.lexists(f)):
            continue
        if os.path.lexists(journal_path(out)) or preflight.previous_report(out) is None:
            continue
        try:
            preflight.check_ownership(out, overwrite=False)
        except OutputError:
            continue
        return out
    return None
