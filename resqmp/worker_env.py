"""The environment and logging every worker gets, set before its interpreter starts.

One rule on every backend for the values: `$NAME` and `${NAME}` are replaced by NAME's value in
the environment the worker starts with (its job's, its container's; the launcher's for local
workers), the empty string when NAME is not set there; nothing else is interpreted. Local workers
get the values expanded by the launcher (expanded_here); job scripts export them as shell words
that expand exactly so (shell_exports); Kubernetes pods carry the other values escaped from
Kubernetes' own `$(VAR)` syntax and get these from a shell prefix (backends/kubernetes.py).
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import threading

from distributed.diagnostics.plugin import WorkerPlugin

from resqmp import launcher_plugins
from resqmp.errors import ProfileError

# numba reads NUMBA_NUM_THREADS once, at import: it must be in the environment before the worker
# interpreter starts (client.run afterwards has no effect). resqpy reads RESQPY_NUMBA_CACHE to
# compile with cache=True; the cache directory must be writable.
DEFAULTS = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "RESQPY_NUMBA_CACHE": "true",
    "NUMBA_CACHE_DIR": "${HOME}/.cache/resqmp/numba",
    "HDF5_USE_FILE_LOCKING": "FALSE",
}


#: The one thing a worker environment value may refer to: `$NAME` or `${NAME}`.
_REFERENCE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: a line break or another control character but tab: in a one-line text (a job script option)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def control_character(value) -> str | None:
    """The first line break or control character in a value, as U+XXXX, or None."""
    m = _CONTROL.search(str(value))
    return f"U+{ord(m.group()):04X}" if m else None


def references(value: str) -> list[str]:
    """Names a value refers to with `$NAME` / `${NAME}`."""
    return [m.group(1) or m.group(2) for m in _REFERENCE.finditer(value)]


def expand(value: str, environ) -> str:
    """The rule, applied here: each `$NAME` / `${NAME}` becomes NAME's value in `environ` (the empty
    string when NAME is not set); everything else stays as written. No `$(...)`, backticks,
    `${NAME:-default}`, `~`, globbing, quoting or escapes: those are plain text."""
    return _REFERENCE.sub(lambda m: environ.get(m.group(1) or m.group(2), ""), value)


def _quoted_text(text: str) -> str:
    """Text as sh words that interpret nothing: single-quoted, each line break double-quoted
    ("<newline>") so that the next line of the script starts with a quote, never with `#`: SGE's
    qsub reads `#$` lines anywhere in a job script as directives (measured: an exported value
    with a line `#$ -N x` renamed the job), whatever the shell makes of them."""
    return '"\n"'.join(shlex.quote(line) if line else "" for line in text.split("\n")) or "''"


def shell_word(value: str) -> str:
    """`value` as one POSIX sh word that the shell turns into expand(value, its environment): each
    reference double-quoted ("${NAME}": no word splitting or globbing), all other text quoted
    (_quoted_text: nothing in it interpreted, no line of it a directive)."""
    parts, pos = [], 0
    for m in _REFERENCE.finditer(value):
        if m.start() > pos:
            parts.append(_quoted_text(value[pos:m.start()]))
        parts.append('"${%s}"' % (m.group(1) or m.group(2)))
        pos = m.end()
    if pos < len(value) or not parts:
        parts.append(_quoted_text(value[pos:]))
    return "".join(parts)


def shell_exports(env: dict[str, str]) -> list[str]:
    """`export NAME=word` lines that set env in a POSIX shell under the rule (see shell_word)."""
    for name, value in env.items():
        if not _NAME.match(name):
            raise ValueError(f"environment variable name {name!r}: expected letters, digits and _, "
                             f"not starting with a digit")
        if "\0" in str(value):
            raise ValueError(f"environment {name}={value!r}: a NUL character cannot be in an environment")
    return [f"export {name}={shell_word(str(value))}" for name, value in env.items()]


def check_values(env: dict[str, str], where: str) -> None:
    """The rule's checks, the same for every backend: no value holds a NUL (no environment can
    carry one: a local worker would fail to start), and none refers to another variable of the
    environment (check_references)."""
    for name, value in env.items():
        if "\0" in str(value):
            raise ProfileError(f"{where}: environment {name}={str(value)!r} holds a NUL character, which "
                               f"no environment can carry")
    check_references(env, where)


def check_references(env: dict[str, str], where: str) -> None:
    """A value may refer to the environment the worker starts with (HOME, TMPDIR, the job's or
    the container's variables) and to its own variable's earlier value (PATH=/opt/bin:$PATH), not
    to another variable of this environment: whether it would see that one's new value or its old
    one would depend on the order each backend sets them in."""
    for name, value in env.items():
        for ref in references(str(value)):
            if ref != name and ref in env:
                raise ProfileError(f"{where}: environment {name}={value!r} refers to {ref}, which the "
                                   f"worker environment also sets; write {name}'s value out in full")


def worker_environment(profile, expand: bool = False) -> dict[str, str]:
    """Defaults overridden by the profile's `environment:`, values unexpanded (see expand); with
    expand=True, expanded here (see expanded_here)."""
    env = {**DEFAULTS, **profile.environment}
    check_values(env, f"profile {profile.source}")
    return expanded_here(env) if expand else env


def expanded_here(env: dict[str, str]) -> dict[str, str]:
    """The rule applied in this process (see expand), for workers started with no shell in between
    (local workers, a warm-up run here): this process's environment is theirs."""
    return {k: expand(v, os.environ) for k, v in env.items()}


class LoggingPlugin(WorkerPlugin):
    """Configures logging on every worker, including workers that join later. Taken down (a run's
    end on workers that outlive it, or the same name registered again), it leaves the worker's
    logging as it found it before the first of resqmp's plugins that are up: launches that overlap
    on one long-lived cluster each add their file (one handler per file, however many use it), the
    latest one's level and format apply while it is up, and the last one down restores the
    worker's own levels and formats."""

    name = "resqmp-logging"

    def __init__(self, level: str = "INFO", fmt: str | None = None, file: str | None = None):
        self.level = level
        self.fmt = fmt or "%(asctime)s %(levelname)s %(name)s: %(message)s"
        self.file = file
        self._path: str | None = None

    def setup(self, worker):
        with _UP_LOCK:
            if not _UP:
                _save_own_logging()
            _UP.append(self)
            if self.file:
                self._path = os.path.abspath(os.path.expanduser(os.path.expandvars(self.file)))
                os.makedirs(os.path.dirname(self._path), exist_ok=True)
                _add_file(self._path)
            _apply(self)

    def teardown(self, worker):
        with _UP_LOCK:
            if self not in _UP:
                return
            _UP.remove(self)
            if self._path:
                _drop_file(self._path)
            if _UP:
                _apply(_UP[-1])            # the latest plugin still up
            else:
                _restore_own_logging()


# The worker process's resqmp logging plugins that are up, oldest first, and what logging was
# before the first of them; one FileHandler per file with how many plugins use it.
_UP: list[LoggingPlugin] = []
_UP_LOCK = threading.Lock()
_OWN: dict = {}
_FILES: dict[str, list] = {}
_LEVELS_SET = ("numba", "resqpy")


def _save_own_logging() -> None:
    root = logging.getLogger()
    _OWN.clear()
    _OWN.update(level=root.level, formatters=[(h, h.formatter) for h in root.handlers],
                levels={n: logging.getLogger(n).level for n in _LEVELS_SET})


def _restore_own_logging() -> None:
    if not _OWN:
        return
    root = logging.getLogger()
    root.setLevel(_OWN["level"])
    for handler, formatter in _OWN["formatters"]:
        handler.setFormatter(formatter)
    for name, value in _OWN["levels"].items():
        logging.getLogger(name).setLevel(value)
    _OWN.clear()


def _apply(plugin: LoggingPlugin) -> None:
    root = logging.getLogger()
    root.setLevel(plugin.level)
    formatter = logging.Formatter(plugin.fmt)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    # numba's compiler logs at INFO/DEBUG are noise at scale
    logging.getLogger("numba").setLevel(logging.WARNING)
    logging.getLogger("resqpy").setLevel(plugin.level)


def _add_file(path: str) -> None:
    entry = _FILES.get(path)
    if entry is None:
        handler = logging.FileHandler(path)
        handler.set_name(f"resqmp-file:{path}")
        logging.getLogger().addHandler(handler)
        _FILES[path] = [handler, 1]
    else:
        entry[1] += 1


def _drop_file(path: str) -> None:
    entry = _FILES.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _FILES[path]
        logging.getLogger().removeHandler(entry[0])
        entry[0].close()


def logging_plugin(profile) -> LoggingPlugin:
    cfg = profile.logging
    return LoggingPlugin(level=cfg.get("level", "INFO"), fmt=cfg.get("format"), file=cfg.get("file"))


#: the logging plugin of one launcher: its client's id follows (runs on one long-lived cluster
#: each have their own, so one run's end never takes down another's)
LOGGING_PREFIX = "resqmp-logging-"


def register_logging(client, profile, workers_outlive_run: bool):
    """Put the profile's logging on every worker, now and joining later; returns what takes it
    down again. Where the workers outlive the run (an external scheduler's), that is the run's
    end, and the plugin of a launcher killed before its end is removed here first."""
    if workers_outlive_run:
        launcher_plugins.withdraw_stale(client, LOGGING_PREFIX)
    name = LOGGING_PREFIX + client.id
    client.register_plugin(logging_plugin(profile), name=name)
    if not workers_outlive_run:
        return lambda: None          # the workers end with the run
    return lambda: launcher_plugins.unregister(client, name)
