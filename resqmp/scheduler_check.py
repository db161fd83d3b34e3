"""Before anything is sent to a scheduler resqmp did not start: does it have this resqmp?

distributed unpickles every submitted task graph on the scheduler, and the functions resqmp
submits (execute.run_group, warm.warm_once, ...) are pickled by reference: module and name, which
the scheduler imports. On a scheduler without resqmp (the `external` backend's, a user's Client in
the drop-in) the first submission failed with distributed's "Error during deserialization of the
task graph". `check` asks the scheduler once, by a function that travels by value (defined inside
`check`, naming nothing of resqmp: see launcher_plugins), which resqmp it imports:
- none: ClusterError (exit 7), one line naming the scheduler and the version it needs;
- another version: when a function resqmp submits is missing from it, a ClusterError naming it
  (it would not unpickle there); else a warning line (it may work; the same version is what
  resqmp supports).
"""
from __future__ import annotations

import logging

from resqmp.errors import ClusterError

log = logging.getLogger(__name__)


def _submitted() -> list[tuple[str, str]]:
    """(module, qualified name) of every function resqmp submits as a task, which the scheduler
    unpickles by reference."""
    from resqmp import execute, tasks, upload, warm
    return [(f.__module__, f.__qualname__) for f in (execute.run_group, tasks.probe, upload.wrapper_imports_here,
                                                     warm.warm_numba_cache, warm.warm_once)]


def check(client, address: str | None = None) -> str | None:
    """Raise ClusterError when the scheduler cannot import resqmp, or lacks a function resqmp
    submits; returns a warning line when its resqmp is another version, else None. One round trip."""
    from resqmp import __version__ as ours
    address = address or client.scheduler.address
    wanted = _submitted()

    # defined here so that it travels by value (see the module's docstring)
    def resqmp_on_scheduler(dask_scheduler=None) -> dict:
        try:
            import resqmp
        except BaseException as e:   # noqa: BLE001 - ImportError, or an error while importing it
            return {"error": f"{type(e).__name__}: {e}"}
        found = {"version": getattr(resqmp, "__version__", None), "path": getattr(resqmp, "__file__", None)}
        if found["version"] != ours:
            import importlib
            missing = []
            for module, name in wanted:
                try:
                    obj = importlib.import_module(module)
                    for part in name.split("."):
                        obj = getattr(obj, part)
                except BaseException:   # noqa: BLE001 - not there: it would not unpickle
                    missing.append(f"{module}.{name}")
            found["missing"] = missing
        return found

    try:
        theirs = client.run_on_scheduler(resqmp_on_scheduler)
    except Exception:   # noqa: BLE001 - a scheduler that runs no functions from clients: cannot tell
        log.debug("could not ask scheduler %s which resqmp it has", address, exc_info=True)
        return None
    needs = (f"resqmp's tasks are unpickled on the scheduler, which needs the same resqmp as this "
             f"launcher, resqmp {ours}")
    if "error" in theirs:
        raise ClusterError(f"scheduler {address} cannot import resqmp ({_one_line(theirs['error'])}): {needs}; "
                           f"install it where the scheduler runs and restart the scheduler")
    if theirs["version"] == ours:
        return None
    has = f"resqmp {theirs['version']} (at {theirs['path']})"
    if theirs.get("missing"):
        raise ClusterError(f"scheduler {address} has {has}, which lacks {', '.join(theirs['missing'])}: {needs}; "
                           f"install it where the scheduler runs and restart the scheduler")
    return f"scheduler {address} has {has}, this launcher resqmp {ours}: {needs}; tasks may fail to start"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
