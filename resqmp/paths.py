"""Paths from profiles, expanded in the launcher by one rule.

Every path resqmp itself opens or creates from a profile (task files under
storage.shared_directory, the TLS folder, job logs, site certificate files) goes through expand():
`~` and `$NAME`, `${NAME}`, `${NAME:-default}` as a shell would expand them. USER, LOGNAME and HOME
fall back to the account's own name and home folder, as a login shell sets them (batch jobs and
containers do not always do so). Any other variable that is not set is an error naming the key,
never a literal `${NAME}` folder. Values that the worker's shell expands (the job script's
`local_directory`, the worker environment) are not paths of the launcher and keep their `$`.
"""
from __future__ import annotations

import errno
import os
import pwd
import re
import shlex
from pathlib import Path

from resqmp.errors import ProfileError

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
                       r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def _account(name: str) -> str | None:
    """What a login shell would set USER, LOGNAME or HOME to; None without a passwd entry."""
    try:
        entry = pwd.getpwuid(os.getuid())
    except KeyError:                      # arbitrary-UID containers
        return None
    return entry.pw_dir if name == "HOME" else entry.pw_name


def variable(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None and name in ("USER", "LOGNAME", "HOME"):
        value = _account(name)
    return value


def expand(text: str, key: str) -> str:
    """`text` (the value of profile key `key`) with its variables and a leading ~ expanded."""
    def one(match: re.Match) -> str:
        name = match.group("braced") or match.group("plain")
        value = variable(name)
        if value is None or (value == "" and match.group("default") is not None):
            if match.group("default") is not None:
                return match.group("default")
            raise ProfileError(f"{key} {text!r}: ${name} is not set in the launcher's environment "
                               f"(set it, or write the path without it)")
        return value

    expanded = _VARIABLE.sub(one, str(text))
    if expanded == "~" or expanded.startswith("~/"):
        home = variable("HOME")
        if home is None:
            raise ProfileError(f"{key} {text!r}: ~ needs $HOME, which is not set in the launcher's environment")
        expanded = home + expanded[1:]
    return expanded


def shell_word(text: str) -> str:
    """`text` as one POSIX sh word that the job's shell turns into a path by the same rule as
    expand(): a leading `~` and `$NAME`, `${NAME}`, `${NAME:-default}` expand (in the job's
    environment; a variable not set there is empty), nothing else does: no `$(...)`, backticks,
    globbing or word splitting. For values the worker's shell expands (local_directory)."""
    parts, pos = [], 0
    if text == "~" or text.startswith("~/"):
        parts.append('"${HOME}"')
        pos = 1
    for m in _VARIABLE.finditer(text, pos):
        if m.start() > pos:
            parts.append(shlex.quote(text[pos:m.start()]))
        name = m.group("braced") or m.group("plain")
        default = m.group("default")
        if default is None:
            parts.append('"${%s}"' % name)
        else:
            # inside "${NAME:-...}" a backslash keeps \ $ ` " } as text (bash, dash)
            parts.append('"${%s:-%s}"' % (name, re.sub(r'([\\$`"}])', r"\\\1", default)))
        pos = m.end()
    if pos < len(text) or not parts:
        parts.append(shlex.quote(text[pos:]))
    return "".join(parts)


def absolute_directory(text: str, key: str) -> str:
    """expand() for a folder the launcher and the workers share (storage.shared_directory): the
    profile anchored a relative value it holds (profiles.anchored_directory), so a value still
    relative once expanded (`$SCRATCH/tasks` with SCRATCH=scratch) has nothing to be relative to
    that every process agrees on: an error naming the key."""
    expanded = expand(text, key)
    if not os.path.isabs(expanded):
        raise ProfileError(f"{key} {text!r}: expands to {expanded!r}, a relative path; write an absolute "
                           f"path, or one relative to the profile file's folder that starts with no "
                           f"variable or ~")
    return expanded


def real(path) -> Path:
    """`path` absolute, every symbolic link resolved, as Path.resolve() does, but never raising:
    a loop of links or a path too long stays as far as it resolves, and whatever opens it fails
    saying why. (Path.resolve() raises RuntimeError on a loop: an internal error, exit 1.)"""
    return Path(os.path.realpath(path))


def named_path(path, what: str, error: type[Exception]) -> Path:
    """A path the user named (OUT, the batch, the performance report): ~ expanded, resolved. A
    loop of symbolic links or a path longer than the system takes is `error` naming it, one line
    with its exit code, not an internal error."""
    resolved = real(os.path.expanduser(str(path)))
    try:
        os.stat(resolved)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise error(f"{what} {path}: a loop of symbolic links ({e.strerror}); expected a path to a "
                        f"file or to nothing yet") from None
        if e.errno == errno.ENAMETOOLONG:
            raise error(f"{what} {path}: too long for this system ({e.strerror}); choose a shorter path") from None
    return resolved
