"""The site's dask configuration: the floor under resqmp's profiles.

Sites configure dask-jobqueue and dask-kubernetes once, in dask's own YAML files (/etc/dask/,
~/.config/dask/, $DASK_CONFIG, ... : `dask.config.paths`) and in DASK_* environment variables
(DASK_JOBQUEUE__SLURM__QUEUE=compute). resqmp reads the same sources in dask's order (files in
path order, then the environment; later ones win, mappings merge) and keeps, for each value, the
file or variable it came from, for `resqmp profiles show` and for messages.

Dask reads its files as YAML 1.1, which turns an unquoted `walltime: 2:00:00` into 7200 (base 60):
7200 minutes for SLURM or LSF. resqmp reads them as dask does in everything but numbers: a number is
read only when written in plain decimal (`120`, `0.5`), as in resqmp's own files (datafile.py), so
`2:00:00`, `010`, `1_000` are the text the site wrote. Because dask-jobqueue alone would read such
a value differently, each one read that way comes with a warning naming the file and the key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dask.config
import yaml

from resqmp import datafile

_MISSING = object()


@dataclass(frozen=True)
class SiteValue:
    value: Any
    key: str            # the dask key that holds it, e.g. jobqueue.slurm.queue
    source: str         # the file, or the environment variable

    @property
    def label(self) -> str:
        return f"dask config {self.key} ({self.source})"


class _SiteLoader(yaml.SafeLoader):
    """YAML 1.1 as dask reads it, except that numbers must be written in plain decimal."""

    def _number_or_text(self, node, construct):
        if node.style is None and not datafile.is_number(node.value):
            return self.construct_scalar(node)
        return construct(self, node)

    def construct_int(self, node):
        return self._number_or_text(node, yaml.SafeLoader.construct_yaml_int)

    def construct_float(self, node):
        return self._number_or_text(node, yaml.SafeLoader.construct_yaml_float)


_SiteLoader.add_constructor("tag:yaml.org,2002:int", _SiteLoader.construct_int)
_SiteLoader.add_constructor("tag:yaml.org,2002:float", _SiteLoader.construct_float)


def _files(paths: list[str]) -> list[str]:
    """The files dask.config.collect_yaml reads, in its order."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            try:
                files += sorted(os.path.join(path, p) for p in os.listdir(path)
                                if os.path.splitext(p)[1].lower() in (".json", ".yaml", ".yml"))
            except OSError:
                pass
        elif os.path.exists(path):
            files.append(path)
    return files


def _sources() -> list[tuple[str, dict, dict]]:
    """(file or variable, its data as resqmp reads it, as dask reads it), lowest precedence first."""
    out = []
    for path in _files(dask.config.paths):
        try:
            with open(path) as f:
                text = f.read()
            ours, theirs = yaml.load(text, Loader=_SiteLoader), yaml.safe_load(text)
        except (OSError, yaml.YAMLError):
            continue                 # dask itself skips unreadable files (and refused broken ones at import)
        if isinstance(ours, dict):
            out.append((path, ours, theirs))
    for name, value in sorted(os.environ.items()):
        if name.startswith("DASK_") and name != "DASK_INTERNAL_INHERIT_CONFIG":
            data = dask.config.collect_env({name: value})
            out.append((name, data, data))
    return out


def values(keys: dict[str, tuple[str, ...]]) -> tuple[dict[str, SiteValue], list[str]]:
    """For each option, the site's value of the first of its dask keys that is set (mappings
    from several sources merged), and warnings about values dask alone would read differently.

    A key is set when its value, over every source in dask's order, is not null: dask-jobqueue's
    own jobqueue.yaml, which sites copy and edit, lists every key and leaves most of them null,
    meaning "not set" (dask-jobqueue then uses its own default). Here too the next layer, resqmp's
    defaults, decides. A new key name that is unset or empty gives way to its deprecated name
    (`job-script-prologue` to `env-extra`, ...), as dask-jobqueue does."""
    found: dict[str, SiteValue] = {}
    warnings: list[str] = []
    sources = _sources()
    for option, candidates in keys.items():
        for position, key in enumerate(candidates):
            chosen: SiteValue | None = None
            for source, ours, theirs in sources:
                value = dask.config.get(key, _MISSING, config=ours)
                if value is _MISSING:
                    continue
                as_dask_reads = dask.config.get(key, _MISSING, config=theirs)
                if isinstance(value, str) and isinstance(as_dask_reads, (int, float)) and \
                        not isinstance(as_dask_reads, bool):
                    warnings.append(f"dask config {key} in {source}: {value} (unquoted) is read by resqmp as "
                                    f"written, but by dask alone (YAML 1.1) as {as_dask_reads!r}: quote it there "
                                    f"('{value}') so every tool reads the same")
                if chosen is not None and isinstance(chosen.value, dict) and isinstance(value, dict):
                    value = dask.config.merge(chosen.value, value)
                chosen = SiteValue(value, key, source)
            if chosen is None or chosen.value is None:
                continue
            if chosen.value == [] and position < len(candidates) - 1:
                continue
            found[option] = chosen
            break
    return found, warnings
