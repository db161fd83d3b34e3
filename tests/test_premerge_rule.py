"""Which workers make group partials: only those running as the launcher's uid (it reads them,
and removes them with the task folder: a 0700 groups/ of another uid can be neither), and with
`auto` only those on another host than the launcher's. Workers of another uid (Kubernetes pods
with their own securityContext, say) used to make partials nobody read and nobody could remove."""
from __future__ import annotations

import os
import socket

from resqmp.execute import Premerge, premerge_rule, run_group
from test_premerge import FIND_FACES, batches  # noqa: F401 - batches is a fixture


def partials(records) -> list:
    return [r.get("partial") for r in records]


def test_the_rule_from_the_setting():
    assert premerge_rule(False) is None and premerge_rule("false") is None
    assert premerge_rule(True) == Premerge(os.geteuid()) == premerge_rule("true")
    assert premerge_rule("auto") == Premerge(os.geteuid(), away_from=socket.gethostname())
    assert premerge_rule(None) == premerge_rule("auto")


def test_partials_only_under_the_launchers_uid_and_away_from_its_host(batches, tmp_path):
    _, tasks = batches["find_faces"]
    items = list(enumerate(tasks[:2]))
    me, here = os.geteuid(), socket.gethostname()
    away = run_group(FIND_FACES, items, str(tmp_path / "a"), premerge=Premerge(me, away_from="launcher-elsewhere"))
    assert away[0]["partial"] and away[0]["partial"] == away[1]["partial"]
    everywhere = run_group(FIND_FACES, items, str(tmp_path / "b"), premerge=Premerge(me))
    assert everywhere[0]["partial"] and everywhere[0]["partial"] == everywhere[1]["partial"]
    assert partials(run_group(FIND_FACES, items, str(tmp_path / "c"), premerge=Premerge(me, away_from=here))) == [None] * 2
    other_uid = run_group(FIND_FACES, items, str(tmp_path / "d"), premerge=Premerge(me + 1))
    assert partials(other_uid) == [None] * 2
    assert not (tmp_path / "d" / "groups").exists()            # nothing written that the launcher could not remove
