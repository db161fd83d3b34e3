"""The dashboard link `resqmp launch` prints, opened in a real browser (headless Chromium) while
the batch runs: the status page must render its Bokeh plots, not "Dask needs bokeh"."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from browser import DASHBOARD_STATE_JS, chromium_page, dashboard_state
from live_launch import LINK, Launch, gated_batch


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
