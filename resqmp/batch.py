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


def resolve_wrapper(ref: str) -> tuple[str, Callable]:
    """'find_faces_to_represent_surface_regular' / '..._wrapper' / 'pkg.mod:func' -> (ref, function)."""
    if not isinstance(ref, str) or not ref.strip():
        raise BatchError("wrapper: expected a resqpy wrapper name or 'package.module:function'")
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
    else:
        module_name, attr = "resqpy.multi_processing", ref if ref.endswith("_wrapper") else f"{ref}_wrapper"
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BatchError(f"wrapper {ref!r}: cannot import module {module_name!r} ({e})") from None
    function = getattr(module, attr, None)
    if not callable(function):
        if module_name == "resqpy.multi_processing":
            known = sorted(n[:-len("_wrapper")] for n in dir(module) if n.endswith("_wrapper"))
            raise BatchError(f"wrapper {ref!r}: not a resqpy wrapper (expected one of: {', '.join(known)})")
        raise BatchError(f"wrapper {ref!r}: module {module_name!r} has no function {attr!r}")
    # Workers import by the function's real home (resqpy re-exports from submodules).
    home = f"{function.__module__}:{function.__qualname__}"
    try:
        importlib.import_module(function.__module__)
    except ImportError:
        home = f"{module_name}:{attr}"
    return home, function


def import_reference(ref: str) -> Callable:
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


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
            out[key] = str(p if p.is_absolute() else (base / p).resolve())
    return out


def load(path: str | Path, check_inputs: bool = True) -> Batch:
    path = Path(path).expanduser().resolve()
    data = _read(path)
    if "wrapper" not in data:
        raise BatchError(f"batch file {path}: missing key 'wrapper'")
    ref, function = resolve_wrapper(data["wrapper"])
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BatchError(f"batch file {path}: defaults: expected a mapping of keyword arguments")
    tasks_in = data.get("tasks")
    if not isinstance(tasks_in, list) or not tasks_in:
        raise BatchError(f"batch file {path}: tasks: expected a non-empty list of keyword-argument mappings")
    signature = inspect.signature(function)
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
                raise BatchError(f"{label}: {key} {value}: file not found")
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
