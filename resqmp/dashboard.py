"""The run's Dask dashboard: the link `resqmp launch` prints, and how to reach it from elsewhere.

Every started cluster (backends.Cluster) says
    dashboard_off: str                  why its dashboard is off by default, how to turn it on
    dashboard_access(link) -> str       how to open a link that only the launcher's host can reach
"""
from __future__ import annotations

import logging
import urllib.error
import urllib.request

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0
#: served by Bokeh's server beside its apps (the status page's own script), never by distributed alone
BOKEH_STATIC = "static/js/bokeh.min.js"


def describe(client, cluster) -> tuple[str | None, list[str]]:
    """(the dashboard link, or None when there is none; the lines to print about it)."""
    try:
        link = client.dashboard_link
    except Exception:   # noqa: BLE001 - e.g. a scheduler that reports no dashboard service
        log.debug("no dashboard link", exc_info=True)
        link = None
    if not link:
        off = cluster.dashboard_off
        return None, [f"dashboard: off{' (' + off + ')' if off else ''}"]
    missing = _missing(link)
    if missing:
        return None, [f"dashboard: none at {link} ({missing})"]
    lines = [f"dashboard: {link}"]
    hint = cluster.dashboard_access(link)
    if hint:
        lines.append(hint)
    return link, lines


def _missing(link: str) -> str:
    """Why the scheduler serves no dashboard at link ("" when it does, or when this host cannot
    tell: a link that only works through a tunnel is still printed).

    Asked first of a static file that only Bokeh's server has, with HEAD: opening the status page
    itself makes the scheduler build a Bokeh session for it (0.4 s of its CPU) and update its plots
    for the ~15 s until the session expires, in the launcher's own event loop for the local and
    jobqueue backends. Only when that file is not there (404), or HEAD was refused (405, 501: a
    proxy in front that allows GET only), is the page read (a 404, or distributed's "Dask needs
    bokeh" page: neither builds a session)."""
    if link.endswith("/status"):
        try:
            urllib.request.urlopen(urllib.request.Request(link[:-len("status")] + BOKEH_STATIC, method="HEAD"),
                                   timeout=PROBE_SECONDS).close()
            return ""
        except urllib.error.HTTPError as e:
            # 405/501: something in between (a proxy allowing GET only) refused HEAD: it told nothing
            if e.code not in (404, 405, 501):
                return ""
        except Exception:   # noqa: BLE001 - unreachable from here (a tunnel, another network)
            return ""
    try:
        with urllib.request.urlopen(link, timeout=PROBE_SECONDS) as response:
            page = response.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return f"the scheduler answers HTTP {e.code}: started without a dashboard" if e.code == 404 else ""
    except Exception:   # noqa: BLE001 - unreachable from here (a tunnel, another network)
        return ""
    if "Dask needs bokeh" in page:
        return "the scheduler's Python environment lacks bokeh>=3.1.0"
    return ""
