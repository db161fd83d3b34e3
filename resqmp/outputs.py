"""The names of every file a launch writes for OUT, in one place.

Preflight checks these before any work (none may be an input, none may be something resqmp did not
write), the recombiner, journal and report write them, and the stale-staging cleanup removes only
folders whose name is exactly one of OUT's staging names. A file written under a temporary name
before it is renamed into place is created by create_new, never opened through what was there.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

#: hex digits that end a staging folder's name (random per run)
_STAGING_TOKEN = 8


def create_new(path: str | os.PathLike, mode: int = 0o666) -> int:
    """A file descriptor, open for writing, on a file created here by this call: never an existing
    file, nor a file a symbolic link planted at `path` points to (O_EXCL fails on any name that
    exists, a link included). `mode` before the umask: 0o666 lets the user's umask decide, as for
    any file they write. FileExistsError when `path` exists."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def h5_of(epc: Path) -> Path:
    """resqpy pairs `a.epc` with `a.h5` in the same folder."""
    return epc.with_suffix(".h5")


def report_path(out: Path) -> Path:
    return out.with_name(out.stem + ".report.json")


def report_temp(out: Path) -> Path:
    """A name of its own for the report being written, renamed over the report when complete."""
    report = report_path(out)
    return report.with_name(f".{report.name}.{secrets.token_hex(4)}.tmp")


def journal_path(out: Path) -> Path:
    return out.with_name(out.stem + ".journal.jsonl")


def partial_path(out: Path) -> Path:
    """Where a run that is not fully successful writes its model when OUT already exists."""
    return out.with_name(out.stem + ".partial.epc")


def new_staging(out: Path) -> Path:
    """A staging folder beside OUT, unique to one run: `.STEM.staging-XXXXXXXX`."""
    return out.with_name(f".{out.stem}.staging-{secrets.token_hex(_STAGING_TOKEN // 2)}")


def is_staging_of(out: Path, name: str) -> bool:
    """Exactly OUT's staging name: OUT's stem taken literally (never as a pattern: an OUT named
    `a[b].epc` or `*.epc` must not match the staging folder of `ab.epc`)."""
    return re.fullmatch(re.escape(f".{out.stem}.staging-") + f"[0-9a-f]{{{_STAGING_TOKEN}}}", name) is not None


def left_aside(epc: Path) -> tuple[Path, Path] | None:
    """Where a launcher killed while putting a new model in place left the model that was at `epc`
    (an OUT, or an OUT's partial model): (that OUT, the file in its staging folder's replaced/),
    which the next launch on that OUT puts back (recombine.recover_staging); None when there is
    none. For "not found" errors about an EPC."""
    outs = [epc]
    if epc.name.endswith(".partial.epc"):
        outs.append(epc.with_name(epc.name[:-len(".partial.epc")] + ".epc"))
    try:
        names = sorted(os.listdir(epc.parent))
    except OSError:
        return None
    for out in outs:
        if out == epc or partial_path(out) == epc:
            for name in names:
                aside = epc.parent / name / "replaced" / epc.name
                if is_staging_of(out, name) and os.path.lexists(aside):
                    return out, aside
    return None


def left_aside_hint(epc: str | os.PathLike) -> str:
    """'' or, for an EPC not found, where a killed launch left it and what puts it back."""
    found = left_aside(Path(os.path.abspath(os.path.expanduser(epc))))
    if found is None:
        return ""
    out, aside = found
    return (f" (a resqmp launch writing it was killed while putting a new model there; the model that was "
            f"there is in {aside.parent}: the next `resqmp launch --output {out}` puts it back)")


def written_files(out: Path) -> dict[str, Path]:
    """Every file a launch on OUT may create or replace, by what it is."""
    partial = partial_path(out)
    return {"OUT": out, "OUT's .h5": h5_of(out), "report": report_path(out), "journal": journal_path(out),
            "partial model": partial, "partial model's .h5": h5_of(partial)}
