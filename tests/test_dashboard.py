"""The dashboard link `resqmp launch` prints, opened in a real browser (headless Chromium) while
the batch runs: the status page must render its Bokeh plots, not "Dask needs bokeh"."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from browser import DASHBOARD_STATE_JS, chromium_page, dashboard_state
from conftest import BIN, TESTS
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
        self.proc = subprocess.Popen([str(BIN / "resqmp"), "launch", *map(str, args)], text=True,
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


def check_status_page(link: str, screenshot: Path) -> dict:
    """Load the status page as a person would and wait (generously) until its plots show the run:
    tasks counted by the progress plot (a finished task whose result resqmp collected leaves the
    count), a finished one drawn in the task stream."""
    with chromium_page() as page:
        page.goto(link, wait_until="load", timeout=120_000)
        assert "Dask needs bokeh" not in page.content(), page.inner_text("body")
        page.wait_for_function(f"""() => {{ const s = ({DASHBOARD_STATE_JS})();
            return s.bokeh && /total: [1-9]/.test(s.progress_title || "") &&
                   (s.task_stream_names || []).includes("resqmp"); }}""", timeout=180_000, polling=500)
        state = dashboard_state(page)
        page.screenshot(path=str(screenshot), full_page=True)
    return state


def assert_plots_rendered(state: dict, tasks: int) -> None:
    assert state["title"] == "Dask: Status", state
    assert "Dask needs bokeh" not in state["text"]
    assert state["bokeh"], state
    # the status page's plots, each drawn on a canvas of its own
    assert {"cluster_memory", "workers_memory", "processing_tabs", "task_stream", "task_progress"} <= set(state["roots"])
    assert state["drawn_canvases"] >= 5, state
    counted = int(re.search(r"total: (\d+),", state["progress_title"]).group(1))
    assert 1 <= counted <= tasks, state["progress_title"]
    assert state["task_stream_rows"] >= 1 and "resqmp" in state["task_stream_names"], state


def test_the_printed_dashboard_link_renders_during_a_local_launch(example, tmp_path, request):
    batch, gate = gated_batch(example, tmp_path)
    tasks = len(yaml.safe_load(batch.read_text())["tasks"])
    out = tmp_path / "out.epc"
    screenshot = tmp_path / "dashboard-local.png"
    run = Launch("--profile", "local", "--workers", "2", "--batch", batch, "--output", out)
    try:
        link = run.wait_for_line(LINK).group(1)
        assert link.startswith("http://127.0.0.1:")
        state = check_status_page(link, screenshot)
        gate.touch()
        assert run.finish() == 0, "\n".join(run.lines)
    finally:
        gate.touch()
        run.stop()
    assert_plots_rendered(state, tasks)
    assert screenshot.stat().st_size > 10_000
    report = json.loads(out.with_name("out.report.json").read_text())
    assert report["dashboard"] == link and report["totals"]["succeeded"] == tasks
    request.config.pluginmanager.get_plugin("terminalreporter").write_line(f"dashboard screenshot: {screenshot}")
