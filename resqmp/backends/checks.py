"""Option values checked before anything is provisioned.

A value the cluster would only refuse later, in a worker that then dies with a traceback (a
memory limit of `banana`, a port of 99999, an interface this host does not have), is refused here
with one line naming the key, where its value came from, and what was expected (exit 4). The
checks use distributed's and dask's own parsers, so they accept exactly what the cluster would.
"""
from __future__ import annotations

import logging
from typing import Any

from dask.utils import parse_bytes, parse_timedelta

from resqmp.errors import ProfileError

_quiet = logging.getLogger("resqmp.checks")


class Checker:
    """Checks the options of one profile section; `origin(key)` names where a value came from."""

    def __init__(self, options: dict[str, Any], origin, section: str = "cluster"):
        self.options, self.origin, self.section = options, origin, section

    def fail(self, key: str, value: Any, expected: str) -> None:
        where = self.origin((self.section, *key.split(".")))
        raise ProfileError(f"{where}: {self.section}.{key} {value!r}: expected {expected}")

    def _value(self, key: str) -> Any:
        node: Any = self.options
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def _parses(self, key: str, valid, expected: str, errors=(ValueError, TypeError)) -> None:
        """A value `valid` accepts (it calls dask's or distributed's own parser): it returns true;
        returning false or raising one of `errors` refuses the value, as does true or false."""
        value = self._value(key)
        if value is None:
            return
        try:
            ok = not isinstance(value, bool) and valid(value)
        except errors:
            ok = False
        if not ok:
            self.fail(key, value, expected)

    def memory(self, key: str, processes: int | None, minimum: int = 256 * 2**20) -> None:
        """A job's memory as dask-jobqueue reads it (Dask's parse_bytes), written with a unit: a
        number alone is bytes to Dask (`memory: 1` meant as 1 GiB gave workers a limit of one
        byte, and SLURMCluster a formatting error). At least `minimum` for each worker process
        (dask-jobqueue divides it between them): a worker with resqpy imported holds ~260 MiB
        before its first task (measured), and its nanny pauses it at 80 % of its limit."""
        value = self._value(key)
        if value is None:
            return
        expected = "a size with a unit such as 4GiB or 500MB (a number alone is bytes)"
        text = str(value).strip()
        if isinstance(value, (bool, int, float)) or not text or text.replace(".", "", 1).isdigit():
            self.fail(key, value, expected)
        try:
            size = parse_bytes(text)
        except (ValueError, TypeError):
            self.fail(key, value, expected)
        per_process = size // max(processes or 1, 1)
        if per_process < minimum:
            shared = f" ({value} for {processes} processes)" if processes and processes > 1 else ""
            self.fail(key, value, f"at least {minimum // 2**20}MiB per worker process{shared}")

    def memory_limit(self, key: str) -> None:
        """A worker's memory limit as distributed reads it: a size, a fraction of the machine,
        "auto", or 0 / null for none."""
        from distributed.worker_memory import parse_memory_limit

        def valid(value) -> bool:
            parse_memory_limit(value, 1, logger=_quiet)     # None for no limit: valid too
            return True
        self._parses(key, valid, 'a size such as 4GiB, a fraction of memory such as 0.5, "auto", or 0 for no limit',
                     errors=(ValueError, TypeError, AssertionError))

    def count(self, key: str, minimum: int = 1, expected: str | None = None) -> int | None:
        value = self._value(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, value, expected or f"an integer >= {minimum}")
        return value

    def pattern(self, key: str, regex: str, expected: str) -> None:
        """A value written in full as `regex` matches it (numbers as their digits)."""
        import re
        value = self._value(key)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not re.fullmatch(regex, str(value)):
            self.fail(key, value, expected)

    def words(self, key: str) -> None:
        """A list of words or lines (strings, numbers), or one string: one item."""
        value = self._value(key)
        if value is None or isinstance(value, str):
            return
        if not isinstance(value, (list, tuple)) or \
                any(isinstance(v, bool) or not isinstance(v, (str, int, float)) for v in value):
            self.fail(key, value, "a list of strings (or one string: a list of one)")

    def mapping(self, key: str) -> None:
        value = self._value(key)
        if value is not None and not isinstance(value, dict):
            self.fail(key, value, "a mapping of options, e.g. {dashboard_address: \"127.0.0.1:8787\"}")

    def boolean(self, key: str) -> None:
        value = self._value(key)
        if value is not None and not isinstance(value, bool):
            self.fail(key, value, "true or false")

    def seconds(self, key: str) -> None:
        """A duration dask reads: 120, "120s", "2 minutes"."""
        self._parses(key, lambda value: parse_timedelta(value) >= 0, 'seconds, or a duration such as "2 minutes"',
                     errors=(ValueError, TypeError, KeyError))

    def port(self, key: str) -> None:
        """A port (0: any free one) or a range "8000:8010", as distributed takes them."""
        from distributed.utils import parse_ports
        self._parses(key, lambda value: all(p is None or 0 <= int(p) <= 65535 for p in parse_ports(value)),
                     'a port from 0 to 65535 (0: any free port) or a range such as "8000:8010"')

    def address(self, key: str) -> None:
        """HOST:PORT, :PORT or PORT (a dashboard address)."""
        value = self._value(key)
        if value is None or value is False:
            return
        text = str(value)
        port = text.rpartition(":")[2] if ":" in text else text
        if isinstance(value, bool) or not port.isdigit() or not 0 <= int(port) <= 65535:
            self.fail(key, value, 'HOST:PORT, :PORT or PORT with a port from 0 to 65535, e.g. "127.0.0.1:8787"')

    def interface_here(self, key: str) -> None:
        """A network interface of this host (the scheduler, or local workers, bind to it here)."""
        value = self._value(key)
        if value is None:
            return
        from distributed.utils import get_ip_interface
        try:
            get_ip_interface(str(value))
        except ValueError as e:
            self.fail(key, value, f"a network interface of this host ({str(e).split('. ', 1)[-1]})")
