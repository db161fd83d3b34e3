"""The worker plugins of one launcher on a cluster that outlives its run (the `external` backend's).

Each launcher names its plugins PREFIX + its client's id (worker_env's logging, upload's code) and
takes them down at its end. A launcher killed before its end leaves them on the scheduler, which
hands them to every worker for ever; the next launch removes those whose client the scheduler no
longer has (`withdraw_stale`).

Finding them means running a function on that scheduler, which is someone else's: it may have
another version of resqmp than the launcher's, or none. cloudpickle pickles a function of a module
by reference (module and name, which the scheduler would have to import: a scheduler that cannot
import resqmp fails to unpickle it, and the stale plugins stay) and a function defined inside
another function by value (its code and the values it closes over). So the function is made inside
`stale`, and names nothing of resqmp. (Worker plugins and `client.run` functions are unpickled on
the workers only, which have resqmp; the scheduler never unpickles them.)
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def stale(client, prefix: str) -> list[str]:
    """The worker plugins named `prefix` + a client id whose client has left the scheduler."""

    # defined here so that it travels by value (see the module's docstring)
    def gone_clients_plugins(dask_scheduler=None) -> list[str]:
        return [n for n in dask_scheduler.worker_plugins
                if n.startswith(prefix) and n[len(prefix):] not in dask_scheduler.clients]

    try:
        return client.run_on_scheduler(gone_clients_plugins)
    except Exception:   # noqa: BLE001 - a scheduler that refuses: the stale plugins stay
        log.debug("could not list stale %s* plugins", prefix, exc_info=True)
        return []


def withdraw_stale(client, prefix: str) -> list[str]:
    """Remove the plugins of launchers that are gone (see stale); returns their names."""
    names = stale(client, prefix)
    for name in names:
        unregister(client, name)
    return names


def unregister(client, name: str) -> None:
    """Take a worker plugin down on every worker and off the scheduler; one already gone is fine."""
    try:
        client.unregister_worker_plugin(name)
    except Exception:   # noqa: BLE001 - already gone (another launcher removed it), or the cluster is closing
        log.debug("unregistering %s", name, exc_info=True)
