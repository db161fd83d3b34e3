"""Cluster profiles: find them, merge `extends:` chains and `--set` overrides, validate.

Profiles are YAML data. They are looked up in layers, later layers winning on the same name:
packaged (resqmp/profiles/) < site (/etc/resqmp/profiles/) < user (~/.config/resqmp/profiles/)
< each folder of RESQMP_PROFILE_PATH, in order.
"""
from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from resqmp import datafile
from resqmp.errors import ProfileError

PACKAGED_DIR = Path(str(resources.files("resqmp") / "profiles"))
SITE_DIR = Path("/etc/resqmp/profiles")

# Keys whose values are strings: read as the text the site wrote, even `True` or `5` (an
# environment variable's value, a name); resqmp/datafile.py has the rules for everything else.
TEXT_KEYS = (("name",), ("description",), ("extends",), ("environment",), ("logging", "file"),
             ("logging", "format"), ("storage", "shared_directory"))


def _user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "resqmp" / "profiles"


def search_layers() -> list[tuple[str, Path]]:
    """(layer label, folder) from lowest to highest precedence."""
    layers = [("packaged", PACKAGED_DIR), ("site", SITE_DIR), ("user", _user_dir())]
    for entry in os.environ.get("RESQMP_PROFILE_PATH", "").split(os.pathsep):
        if entry:
            layers.append(("RESQMP_PROFILE_PATH", Path(entry)))
    return layers


@dataclass
class Profile:
    """A merged, validated profile."""
    name: str
    backend: str
    data: dict[str, Any]
    source: Path                       # the file named on the command line / found by name
    chain: list[Path] = field(default_factory=list)   # files merged, base first
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)   # key path -> where its value came from
    warnings: list[str] = field(default_factory=list)    # for the user: what the command line replaced, ...

    def origin(self, path: tuple[str, ...]) -> str:
        """Where the value at a key path came from: `--set 'a.b=v'`, `profile FILE`, ..."""
        for length in range(len(path), 0, -1):
            if path[:length] in self.origins:
                return self.origins[path[:length]]
        return f"profile {self.source}"

    @property
    def cluster(self) -> dict[str, Any]:
        return self.data.get("cluster") or {}

    @property
    def scaling(self) -> dict[str, Any]:
        return self.data.get("scaling") or {}

    @property
    def environment(self) -> dict[str, str]:
        return {k: _env_str(v) for k, v in (self.data.get("environment") or {}).items()}

    @property
    def logging(self) -> dict[str, Any]:
        return self.data.get("logging") or {}

    @property
    def storage(self) -> dict[str, Any]:
        return self.data.get("storage") or {}

    @property
    def tasks(self) -> dict[str, Any]:
        return self.data.get("tasks") or {}


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _schema() -> dict:
    with resources.files("resqmp").joinpath("schema/profile.schema.json").open() as f:
        return json.load(f)


def available() -> dict[str, tuple[str, Path]]:
    """name -> (layer label, path) of the winning profile of each name."""
    found: dict[str, tuple[str, Path]] = {}
    for label, folder in search_layers():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
                found[path.stem] = (label, path)
    return found


def _looks_like_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or os.sep in ref


def _find(ref: str, below: Path | None = None, relative_to: Path | None = None) -> Path:
    """Locate a profile by name or path. `below`: only layers of lower precedence than that file
    (so a site profile `slurm` may extend the packaged `slurm`)."""
    if _looks_like_path(ref):
        path = Path(os.path.expanduser(ref))
        if not path.is_absolute() and relative_to is not None and not path.exists():
            path = relative_to / path
        if not path.is_file():
            raise ProfileError(f"profile file {ref}: not found")
        return path.resolve()
    candidates: list[Path] = []
    for _, folder in search_layers():
        for suffix in (".yaml", ".yml"):
            if (folder / f"{ref}{suffix}").is_file():
                candidates.append((folder / f"{ref}{suffix}").resolve())
    if below is not None:
        below = below.resolve()
        candidates = candidates[:candidates.index(below)] if below in candidates else candidates
    if not candidates:
        known = ", ".join(sorted(available())) or "none"
        where = " below " + str(below) if below is not None else ""
        raise ProfileError(f"profile {ref!r}: not found{where} (known profiles: {known}; or give a path to a .yaml file)")
    return candidates[-1]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = datafile.read_file(path, text_under=TEXT_KEYS)
    except datafile.DataError as e:
        raise ProfileError(f"profile {path}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path}: expected a mapping of keys at top level, got {type(data).__name__}")
    return data


def describe_schema_error(err: jsonschema.ValidationError) -> str:
    """One line: the key path and what was expected."""
    path = ".".join(str(p) for p in err.absolute_path)
    key = path or "(top level)"
    if err.validator == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())
        extra = sorted(set(err.instance) - set(allowed))
        prefix = f"{path}." if path else ""
        return f"unknown key {prefix}{extra[0]} (expected one of: {', '.join(allowed)})"
    if err.validator == "enum":
        return f"{key}: {err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
    if err.validator == "type":
        expected = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return f"{key}: expected {expected}, got {type(err.instance).__name__} {err.instance!r}{_number_hint(err)}"
    if err.validator == "anyOf":
        expected = " or ".join(_expected(s) for s in err.validator_value)
        return f"{key}: expected {expected}, got {type(err.instance).__name__} {err.instance!r}{_number_hint(err)}"
    if err.validator == "required":
        return f"{key}: missing required key ({err.message})"
    if "propertyNames" in err.absolute_schema_path:
        return f"{key}: {err.instance!r} is not a valid environment variable name"
    return f"{key}: {err.message}"


def _number_hint(err: jsonschema.ValidationError) -> str:
    """For text that YAML 1.1 would have read as a number (010, 1.50, 1e3): how to write it."""
    wanted = str(err.validator_value)
    if not isinstance(err.instance, str) or ("number" not in wanted and "integer" not in wanted):
        return ""
    try:
        value = float(err.instance.replace("_", ""))
    except ValueError:
        return ""
    if value != value or abs(value) == float("inf"):
        return ""
    if "number" not in wanted and not value.is_integer():
        return ""                       # an integer is wanted: 1.50 has no plain form that fits
    plain = str(int(value)) if value.is_integer() else repr(value)
    return f" (numbers are read only in plain decimal: write {plain})"


def _expected(schema: dict) -> str:
    """What one alternative of an anyOf accepts, e.g. 'auto' or integer >= 1."""
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type", "value")
    text = kind if isinstance(kind, str) else " or ".join(kind)
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    return text


def _validate(data: dict, where: str, require_backend: bool) -> None:
    schema = _schema()
    if not require_backend:
        schema = {**schema, "required": []}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        raise ProfileError(f"profile {where}: {describe_schema_error(errors[0])}")


def _anchor_paths(data: dict, folder: Path) -> None:
    """Relative paths in a profile file are relative to the folder of the file that names them,
    wherever resqmp is run from (merging forgets the file): tasks.upload ($VARS and ~ expanded),
    and storage.shared_directory (see anchored_directory)."""
    entries = (data.get("tasks") or {}).get("upload")
    if entries:
        data["tasks"]["upload"] = [os.path.normpath(folder / os.path.expanduser(os.path.expandvars(e)))
                                  for e in entries]
    storage = data.get("storage")
    if isinstance(storage, dict) and "shared_directory" in storage:
        storage["shared_directory"] = anchored_directory(storage["shared_directory"], folder)


def anchored_directory(value, folder: Path):
    """A folder's path as written, below `folder` when it is plainly relative. The launcher expands
    it later (paths.expand: an unset variable is an error then, not now), so a value that starts
    with a variable or ~ is left to its expansion, which must give an absolute path
    (paths.absolute_directory); any other relative value is joined as written, $VARS in it kept."""
    if not isinstance(value, str) or not value or value.startswith(("/", "~", "$")):
        return value
    return os.path.join(os.path.abspath(folder), value)


def deep_merge(base: dict, over: dict) -> dict:
    """Mappings merge key by key; everything else (lists, scalars) is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_set(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value read as a YAML scalar/flow value, with the rules
    of profile files: resqmp/datafile.py)."""
    key, sep, raw = item.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not sep or not all(parts):
        raise ProfileError(f"--set {_shown(item)}: expected KEY=VALUE with a dotted key, e.g. scaling.workers=4")
    try:
        value = datafile.loads_yaml(raw, text_under=TEXT_KEYS, at=tuple(parts)) if raw.strip() else ""
    except datafile.DataError as e:
        raise ProfileError(f"--set {_shown(item)}: {e.problem}") from None
    return parts, value


def _shown(item: str, limit: int = 80) -> str:
    """The --set item for an error line; a huge value is cut (the line stays one line)."""
    return repr(item) if len(item) <= limit else repr(item[:limit]) + "..."


def _apply_set(data: dict, parts: list[str], value: Any, item: str) -> None:
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ProfileError(f"--set {item!r}: {p} holds a {type(nxt).__name__}, not a mapping")
        node = nxt
    node[parts[-1]] = value


def _leaves(data: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every value that is not a non-empty mapping."""
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            yield from _leaves(value, path)
        else:
            yield path, value


def _record(origins: dict, path: tuple[str, ...], label: str) -> None:
    """`path` now comes from `label`, and so does everything below it."""
    for known in [p for p in origins if p[:len(path)] == path]:
        del origins[known]
    origins[path] = label


def _one_way_to_scale(merged: dict, layer: dict, label: str, origins: dict, warnings: list[str] | None) -> None:
    """scaling.workers and scaling.adaptive are alternatives: the one a higher layer sets replaces
    the other; from the command line (warnings given), the user is told."""
    scaling = merged.get("scaling") or {}
    given = (layer.get("scaling") or {}) if isinstance(layer.get("scaling"), dict) else {}
    for mine, other in (("workers", "adaptive"), ("adaptive", "workers")):
        if mine in given and other not in given and other in scaling:
            replaced = scaling.pop(other)
            was = origins.pop(("scaling", other), None) or next(
                (origins.pop(p) for p in list(origins) if p[:2] == ("scaling", other)), "the profile")
            for p in [p for p in origins if p[:2] == ("scaling", other)]:
                del origins[p]
            if warnings is not None:
                what = (f"the adaptive scaling ({replaced.get('minimum', 0)}..{replaced.get('maximum')} workers)"
                        if other == "adaptive" else f"the fixed count of {replaced} workers")
                warnings.append(f"{label} replaces {what} of {was}")


def load(ref: str, overrides: list[str] | tuple[str, ...] = (), workers: int | None = None) -> Profile:
    """Find, merge (extends chain, then --set overrides, then --workers) and validate a profile,
    then lay it over its floor: the site's dask config, then resqmp's defaults (see _with_floor)."""
    top = _find(ref)
    chain: list[Path] = []
    layers: list[dict] = []
    path: Path | None = top
    while path is not None:
        if path in chain:
            cycle = " -> ".join(str(p) for p in chain + [path])
            raise ProfileError(f"profile {top}: extends cycle: {cycle}")
        data = _read(path)
        _validate(data, str(path), require_backend=False)
        _anchor_paths(data, path.parent)
        chain.append(path)
        layers.append(data)
        parent = data.get("extends")
        if parent is None:
            path = None
        else:
            same_name = not _looks_like_path(parent) and parent == path.stem
            try:
                path = _find(parent, below=path if same_name else None, relative_to=path.parent)
            except ProfileError as e:
                raise ProfileError(f"profile {chain[-1]}: extends: {e}") from None
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    warnings: list[str] = []
    for data, path in zip(reversed(layers), reversed(chain)):
        merged = deep_merge(merged, data)
        _one_way_to_scale(merged, data, f"profile {path}", origins, None)
        for leaf, _ in _leaves(data):
            _record(origins, leaf, f"profile {path}")
    merged.pop("extends", None)
    command_line = [(item, f"--set {_shown(item)}") for item in overrides]
    if workers is not None:
        command_line.append((f"scaling.workers={workers}", f"--workers {workers}"))
    for item, label in command_line:
        parts, value = parse_set(item)
        if parts == ["storage", "shared_directory"]:
            value = anchored_directory(value, Path.cwd())      # the command line's: the current folder
        _apply_set(merged, parts, value, item)
        layer: dict[str, Any] = value
        for part in reversed(parts):
            layer = {part: layer}
        _one_way_to_scale(merged, layer, label, origins, warnings)
        _record(origins, tuple(parts), label)
        try:
            _validate(merged, str(top), require_backend=False)
        except ProfileError as e:
            raise ProfileError(f"{label}: {str(e).split(': ', 1)[1]}") from None
    _validate(merged, str(top), require_backend=True)
    if "name" not in merged:
        merged["name"] = top.stem
        origins[("name",)] = f"the name of {top}"
    profile = Profile(name=merged["name"], backend=merged["backend"], data=merged, source=top,
                      chain=list(reversed(chain)), origins=origins, warnings=warnings)
    _check_cluster_keys(profile, layers, chain, overrides)
    _with_floor(profile)
    return profile


def _with_floor(profile: Profile) -> None:
    """Precedence, highest first: --set, the profile files (user, site, packaged), the site's dask
    config, resqmp's defaults. A cluster option the profile leaves out or sets to null comes from
    the next layer down that sets it; mappings merge key by key, lists are replaced whole."""
    from resqmp import dask_site
    from resqmp.backends import floor

    base = floor(profile.backend)
    site, warnings = dask_site.values(base.dask_keys)
    profile.warnings.extend(warnings)
    own = profile.data.get("cluster") or {}
    above = deep_merge({option: v.value for option, v in site.items()},
                       {k: v for k, v in own.items() if v is not None})
    defaults = base.defaults(above, profile.data)
    cluster = deep_merge(defaults, above)
    for key, value in own.items():
        cluster.setdefault(key, value)          # null, and nothing below sets it: null as written
    origins = {p: label for p, label in profile.origins.items() if p[0] != "cluster"}
    for leaf, _ in _leaves(defaults, ("cluster",)):
        _record(origins, leaf, "resqmp default")
    for option, value in site.items():
        for leaf, _ in _leaves({option: value.value}, ("cluster",)):
            _record(origins, leaf, value.label)
    for p, label in profile.origins.items():
        if p[0] == "cluster" and (len(p) == 1 or own.get(p[1]) is not None or p[1] not in above and
                                  p[1] not in defaults):
            _record(origins, p, label)
    profile.data["cluster"] = cluster
    profile.origins = origins


def _flow(value: Any) -> str:
    """One value as YAML on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True).strip()
    return text[:-len("...")].strip() if text.endswith("\n...") else text


def annotated(profile: Profile, environment: dict[str, str]) -> str:
    """The effective profile as YAML, each value marked with where it came from: `--set ...`,
    `profile FILE`, `dask config KEY (FILE or VARIABLE)` or `resqmp default`."""
    from resqmp.worker_env import DEFAULTS

    def lines(data: dict, path: tuple[str, ...], origin_of) -> list[str]:
        out = []
        for key, value in data.items():
            here = (*path, key)
            indent = "  " * len(path)
            if isinstance(value, dict) and value:
                out.append(f"{indent}{_flow(key)}:")
                out += lines(value, here, origin_of)
            else:
                out.append(f"{indent}{_flow(key)}: {_flow(value)}  # {origin_of(here)}")
        return out

    def env_origin(path: tuple[str, ...]) -> str:
        name = path[-1]
        if name in profile.environment:
            return profile.origin(("environment", name))
        return "resqmp default" if name in DEFAULTS else "?"

    data = {k: v for k, v in profile.data.items() if k != "environment"}
    out = [f"# {profile.name}: merged from {', '.join(str(c) for c in profile.chain)}",
           "# precedence: --set > profile files > the site's dask config > resqmp defaults"]
    out += lines(data, (), profile.origin)
    out.append("environment:  # the worker environment, defaults included")
    out += lines(environment, ("environment",), env_origin) if environment else []
    return "\n".join(out) + "\n"


def _check_cluster_keys(profile: Profile, layers: list[dict], chain: list[Path], overrides) -> None:
    """Keys under `cluster:` must be options of the backend's cluster class."""
    from resqmp.backends import cluster_options
    allowed = cluster_options(profile.backend)
    if allowed is None:
        return
    for key in profile.cluster:
        if key in allowed:
            continue
        culprit = next((f"--set {o!r}" for o in overrides if o.startswith(f"cluster.{key}")), None)
        if culprit is None:
            culprit = "profile " + str(next((p for p, d in zip(chain, layers) if key in (d.get("cluster") or {})), profile.source))
        close = difflib.get_close_matches(key, allowed, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else "see `resqmp profiles render` for the options"
        raise ProfileError(f"{culprit}: unknown key cluster.{key} for backend {profile.backend} "
                           f"(expected an option of its cluster class; {hint})")
