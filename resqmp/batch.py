"""Batch files: which wrapper to call and the keyword arguments of each task.

    wrapper: find_faces_to_represent_surface_regular    # resqpy wrapper (with or without _wrapper)
                                                        # or "package.module:function"
    defaults: {grid_epc: model.epc, ...}                # shared by every task (optional)
    tasks:
      - {surface_uuid: "...", name: "fault 1"}

Relative paths (keys ending in _epc, _file, _path or _dir) resolve against the batch file's folder.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from resqmp import datafile
from resqmp.errors import BatchError
from resqmp.outputs import left_aside_hint
from resqmp.paths import named_path, real

PATH_SUFFIXES = ("_epc", "_file", "_path", "_dir")
SUPPLIED = ("index", "parent_tmp_dir")      # resqmp supplies these, as function_multiprocessing does
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass
class Batch:
    path: Path
    wrapper: str                      # importable reference "module:function"
    function: Callable
    tasks: list[dict[str, Any]]       # kwargs per task, paths resolved, without index/parent_tmp_dir
    names: list[str | None]

    @property
    def digest(self) -> str:
        """Identity of the work: wrapper and every task's kwargs (detects a changed batch on resume)."""
        blob = json.dumps({"wrapper": self.wrapper, "tasks": self.tasks}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def input_paths(self) -> list[str]:
        """Every existing-file input of every task (for checks that workers can see them)."""
        seen: dict[str, None] = {}
        for kwargs in self.tasks:
            for key, value in kwargs.items():
                if key.endswith("_epc") and isinstance(value, str):
                    seen[value] = None
        return list(seen)


#: `module:function` (one function name, no attribute path) or `module:*` in an allow-list
_REFERENCE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")
_ALLOW_ENTRY = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:(?:[A-Za-z_]\w*|\*)$")
_BARE_NAME = re.compile(r"^[A-Za-z_]\w*$")
RESQPY_WRAPPERS = "resqpy.multi_processing"
#: run without being allowed: resqmp's own wrappers (besides resqpy's, see _is_resqpy_wrapper)
ALLOWED_BY_DEFAULT = ("resqmp.wrappers:*",)


def check_allow_entry(entry: str) -> str:
    """An allow-list entry ('module:function' or 'module:*'); ValueError when malformed."""
    if not isinstance(entry, str) or not _ALLOW_ENTRY.match(entry):
        raise ValueError(f"{entry!r}: expected 'package.module:function' or 'package.module:*'")
    return entry


def _parse(ref) -> tuple[str, str]:
    """A batch's `wrapper:` as (module, function), from its text alone: nothing is imported here."""
    if isinstance(ref, str) and _BARE_NAME.match(ref):
        return RESQPY_WRAPPERS, ref if ref.endswith("_wrapper") else f"{ref}_wrapper"
    m = _REFERENCE.match(ref) if isinstance(ref, str) else None
    if not m:
        raise BatchError(f"wrapper {ref!r}: expected a resqpy wrapper name (e.g. "
                         f"find_faces_to_represent_surface_regular) or 'package.module:function'")
    return m.group(1), m.group(2)


def _resqpy_wrapper_homes() -> dict[str, str]:
    """'module:function' -> 'resqpy.multi_processing:function' for every `*_wrapper` function that
    resqpy.multi_processing exports, under each resqpy module that holds it (resqpy re-exports
    them from submodules). Imports resqpy.multi_processing only, the code resqmp deploys."""
    import sys
    module = importlib.import_module(RESQPY_WRAPPERS)
    exported = {n: getattr(module, n) for n in dir(module) if n.endswith("_wrapper")}
    homes = {f"{RESQPY_WRAPPERS}:{n}": f"{RESQPY_WRAPPERS}:{n}" for n, f in exported.items() if callable(f)}
    for name, mod in list(sys.modules.items()):
        if name == RESQPY_WRAPPERS or not name.startswith(RESQPY_WRAPPERS + "."):
            continue
        for n, f in exported.items():
            if callable(f) and getattr(mod, n, None) is f:
                homes[f"{name}:{n}"] = f"{RESQPY_WRAPPERS}:{n}"
    return homes


def _allowed_by(module: str, attr: str, allowed: tuple[str, ...]) -> str | None:
    """The allow-list entry that lets module:attr run, if any."""
    for entry in allowed:
        if entry in (f"{module}:{attr}", f"{module}:*"):
            return entry
    return None


def resolve_wrapper(ref: str, allowed: tuple[str, ...] | list[str] = ()) -> tuple[str, Callable]:
    """A batch's `wrapper:` -> ('module:function' as workers import it, the function).

    Data is not code: by default only resqpy's multiprocessing wrappers (a name with or without
    `_wrapper`, or 'resqpy.multi_processing[.submodule]:..._wrapper') and resqmp's own
    (`resqmp.wrappers:*`) run. Any other 'module:function' must be in `allowed` (the profile's
    tasks.allowed_wrappers and --allow-wrapper): 'module:function', or 'module:*' for the functions
    defined in that module. The reference is checked before anything is imported, and the
    reference returned (the one workers import) is the one that was checked."""
    module_name, attr = _parse(ref)
    if module_name == RESQPY_WRAPPERS and ":" not in ref:
        homes = _resqpy_wrapper_homes()
        if f"{module_name}:{attr}" not in homes:
            known = sorted(h.split(":")[1][:-len("_wrapper")] for h in set(homes.values()))
            raise BatchError(f"wrapper {ref!r}: not a resqpy wrapper (expected one of: {', '.join(known)})")
    allowed = tuple(ALLOWED_BY_DEFAULT) + tuple(allowed)
    entry = _allowed_by(module_name, attr, allowed)
    checked = f"{module_name}:{attr}"
    if entry is None:
        resqpy = module_name == "resqpy" or module_name.startswith("resqpy.")
        checked = _resqpy_wrapper_homes().get(checked) if resqpy else None
        if checked is None:
            raise BatchError(f"wrapper {ref!r} is not allowed: only resqpy's multiprocessing wrappers and "
                             f"resqmp.wrappers run unless allowed; to run it, pass --allow-wrapper "
                             f"{module_name}:{attr} or add it to the profile's tasks.allowed_wrappers")
        module_name, attr = checked.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        missing = isinstance(e, ModuleNotFoundError) and e.name == module_name.split(".")[0]
        hint = "; if it is your own code, ship it with --upload PATH (its .py file or package folder)" if missing else ""
        raise BatchError(f"wrapper {ref!r}: cannot import module {module_name!r} ({e}){hint}") from None
    function = getattr(module, attr, None)
    if function is None:
        raise BatchError(f"wrapper {ref!r}: module {module_name!r} has no function {attr!r}")
    if not inspect.isfunction(function):
        raise BatchError(f"wrapper {ref!r}: not a Python function ({type(function).__name__}); "
                         f"a wrapper is a function with resqpy's return contract")
    if entry is not None and entry.endswith(":*") and function.__module__ != module_name:
        # `module:*` allows what the module defines, not what it imports from elsewhere
        raise BatchError(f"wrapper {ref!r} is not allowed: {attr} is imported into {module_name}, not "
                         f"defined there ({entry} allows only the latter); to run it, pass "
                         f"--allow-wrapper {module_name}:{attr} or add it to the profile's tasks.allowed_wrappers")
    return checked, function


def import_reference(ref: str) -> Callable:
    """Run on a worker: the function behind a reference the launcher checked ('module:function').
    Never walks attribute paths: only a module's own top-level name."""
    m = _REFERENCE.match(ref) if isinstance(ref, str) else None
    if not m:
        raise ValueError(f"wrapper reference {ref!r}: expected 'package.module:function'")
    return getattr(importlib.import_module(m.group(1)), m.group(2))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise BatchError(f"batch file {path}: not found" if not path.exists() else f"batch file {path}: not a file")
    try:
        data = datafile.read_file(path)       # YAML, or JSON for *.json: resqmp/datafile.py
    except datafile.DataError as e:
        raise BatchError(f"batch file {path}: {e}") from None
    if not isinstance(data, dict):
        raise BatchError(f"batch file {path}: expected a mapping with keys wrapper, defaults, tasks")
    unknown = set(data) - {"wrapper", "defaults", "tasks"}
    if unknown:
        raise BatchError(f"batch file {path}: unknown key {sorted(unknown)[0]!r} (expected wrapper, defaults, tasks)")
    return data


def _resolve_paths(kwargs: dict, base: Path) -> dict:
    out = dict(kwargs)
    for key, value in kwargs.items():
        if key.endswith(PATH_SUFFIXES) and isinstance(value, str) and value:
            p = Path(os.path.expanduser(os.path.expandvars(value)))
            out[key] = str(p if p.is_absolute() else real(base / p))    # a link loop: the wrapper's to open
    return out


def load(path: str | Path, check_inputs: bool = True, allowed_wrappers: tuple[str, ...] | list[str] = ()) -> Batch:
    """Read and check a batch file. allowed_wrappers: 'module:function' / 'module:*' that may run
    besides resqpy's wrappers (see resolve_wrapper)."""
    path = named_path(path, "batch file", BatchError)
    data = _read(path)
    if "wrapper" not in data:
        raise BatchError(f"batch file {path}: missing key 'wrapper'")
    try:
        ref, function = resolve_wrapper(data["wrapper"], allowed_wrappers)
    except BatchError as e:
        raise BatchError(f"batch file {path}: {e}") from None
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BatchError(f"batch file {path}: defaults: expected a mapping of keyword arguments")
    tasks_in = data.get("tasks")
    if not isinstance(tasks_in, list) or not tasks_in:
        raise BatchError(f"batch file {path}: tasks: expected a non-empty list of keyword-argument mappings")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as e:
        raise BatchError(f"batch file {path}: wrapper {data['wrapper']!r}: no usable signature ({e})") from None
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    tasks, names = [], []
    for i, task in enumerate(tasks_in):
        if not isinstance(task, dict):
            raise BatchError(f"batch file {path}: tasks[{i}]: expected a mapping, got {type(task).__name__}")
        kwargs = _resolve_paths({**defaults, **task}, path.parent)
        name = kwargs.get("name")
        if "name" not in signature.parameters and not takes_any:
            kwargs.pop("name", None)           # a label for the report only
        for key in SUPPLIED:
            if key in kwargs:
                raise BatchError(f"batch file {path}: tasks[{i}]: {key!r} is supplied by resqmp; remove it")
        try:
            signature.bind(index=i, parent_tmp_dir="", **kwargs)
        except TypeError as e:
            raise BatchError(f"batch file {path}: tasks[{i}]{_label(name)}: {e} for wrapper {data['wrapper']}") from None
        tasks.append(kwargs)
        names.append(None if name is None else str(name))
    batch = Batch(path=path, wrapper=ref, function=function, tasks=tasks, names=names)
    if check_inputs:
        check_inputs_exist(batch)
    return batch


def _label(name) -> str:
    return f" ({name})" if name is not None else ""


def _epc_uuids(epc: str, cache: dict[str, set[str]]) -> set[str]:
    """uuids of the parts an EPC holds, from its zip directory (no HDF5 or XML parsing)."""
    if epc not in cache:
        try:
            with zipfile.ZipFile(epc) as z:
                cache[epc] = {m.lower() for name in z.namelist() for m in _UUID.findall(name)}
        except (zipfile.BadZipFile, OSError) as e:
            raise BatchError(f"input EPC {epc}: not a readable EPC file ({e})") from None
    return cache[epc]


def check_inputs_exist(batch: Batch) -> None:
    """Every *_epc input exists and every *_uuid(s) value is a part of one of the task's EPCs."""
    cache: dict[str, set[str]] = {}
    for i, kwargs in enumerate(batch.tasks):
        label = f"batch file {batch.path}: tasks[{i}]{_label(batch.names[i])}"
        epcs = [v for k, v in kwargs.items() if k.endswith("_epc") and isinstance(v, str)]
        for key, value in kwargs.items():
            if key.endswith("_epc") and isinstance(value, str) and not os.path.isfile(value):
                raise BatchError(f"{label}: {key} {value}: file not found{left_aside_hint(value)}")
        if not epcs:
            continue
        for key, value in kwargs.items():
            if not (key.endswith("_uuid") or key.endswith("_uuids")) or value is None:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            stem = key.rsplit("_uuid", 1)[0]
            own = kwargs.get(f"{stem}_epc")
            where = [own] if isinstance(own, str) else epcs
            for u in values:
                if not _UUID.fullmatch(str(u)):
                    raise BatchError(f"{label}: {key} {u!r}: not a uuid")
                if not any(str(u).lower() in _epc_uuids(e, cache) for e in where):
                    raise BatchError(f"{label}: {key} {u} is not a part of {' or '.join(where)}")
