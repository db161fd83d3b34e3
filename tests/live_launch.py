"""A `resqmp launch` running in the background for tests that look at it while it runs (its
dashboard, an interruption), and a batch that stays open until the test lets it finish."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import yaml

from conftest import ALLOW_TEST_WRAPPERS, BIN, TESTS
from proc_watch import wait_for

LINK = re.compile(r"dashboard: (https?://\S+/status)")


def gated_batch(example: dict, folder: Path) -> tuple[Path, Path]:
    """The example's find-faces batch through tests' gated_find_faces: task 0 runs at once, the
    others wait until the returned gate file exists, so the cluster (and its dashboard) stays up
    for as long as the test looks at it, with one finished task in the task stream."""
    data = yaml.safe_load(Path(example["batch"]).read_text())
    gate = folder / "gate"
    data["wrapper"] = "wrappers_for_tests:gated_find_faces"
    data.setdefault("defaults", {})["gate_file"] = str(gate)
    data["tasks"][0]["gate_file"] = None
    root = Path(example["batch"]).parent         # the example's relative input paths
    for key, value in list(data["defaults"].items()):
        if key.endswith("_epc"):
            data["defaults"][key] = str(root / value)
    path = folder / "batch-gated.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, gate


class Launch:
    """`resqmp launch` in the background, its stderr collected line by line."""

    def __init__(self, *args: str, env: dict | None = None):
        full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(TESTS)}
        self.proc = subprocess.Popen([str(BIN / "resqmp"), "launch", *map(str, args), *ALLOW_TEST_WRAPPERS], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: re.Pattern, timeout: float = 180) -> re.Match:
        def found():
            return next((m for m in map(pattern.search, list(self.lines)) if m), None) or self.proc.poll() is not None
        wait_for(found, timeout, f"a line matching {pattern.pattern!r}")
        match = next((m for m in map(pattern.search, list(self.lines)) if m), None)
        assert match, f"resqmp launch exited {self.proc.returncode} first:\n" + "\n".join(self.lines)
        return match

    def finish(self, timeout: float = 300) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=60)
        self._reader.join(timeout=30)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=120)

    def interrupt(self, timeout: float = 120) -> int:
        """SIGTERM to the launcher alone, as `kill` or a batch system would send it."""
        self.proc.send_signal(signal.SIGTERM)
        return self.finish(timeout)
