"""A real browser for the dashboard tests: Debian's Chromium, headless, driven by Playwright
(Playwright's own browser download cannot run here; ci/chromium/install.sh installs Chromium).
Playwright's locators reach into the shadow roots where Bokeh 3 draws its canvases, which
`chromium --dump-dom` does not serialise."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root in a closed network: no sandbox (root), no GPU, no calls home.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update"]

# What a dashboard page shows, read through BokehJS: the document's plots (by name), the
# progress plot's title (task counts) and the number of rows the task-stream plot draws.
DASHBOARD_STATE_JS = """() => {
  const state = {title: document.title, text: document.body ? document.body.innerText : "",
                 bokeh: typeof Bokeh !== "undefined" && Bokeh.documents.length > 0};
  if (!state.bokeh) return state;
  const doc = Bokeh.documents[0];
  state.roots = doc.roots().map(r => r.name);
  const progress = doc.get_model_by_name("task_progress");
  state.progress_title = progress ? progress.title.text : null;
  const stream = doc.get_model_by_name("task_stream");
  const sources = stream ? stream.renderers.map(r => r.data_source).filter(s => s && s.get_length) : [];
  state.task_stream_rows = Math.max(0, ...sources.map(s => s.get_length() || 0));
  // the task groups drawn (a Dask key's prefix: resqmp's keys start with "resqmp")
  state.task_stream_names = [...new Set(sources.flatMap(s => [...(s.data.name || [])]))];
  return state;
}"""


def ensure_chromium() -> Path:
    if not CHROMIUM.exists():
        script = REPO / "ci" / "chromium" / "install.sh"
        proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(f"{script} could not install Chromium (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
                        pytrace=False)
    return CHROMIUM


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    """A page in a fresh headless Chromium (its own empty profile), closed afterwards."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(ensure_chromium()), args=FLAGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def dashboard_state(page) -> dict:
    state = page.evaluate(DASHBOARD_STATE_JS)
    # canvases live in Bokeh's shadow roots; Playwright's CSS locators pierce them
    state["canvases"] = page.locator("canvas").count()
    state["drawn_canvases"] = sum(1 for box in (c.bounding_box() for c in page.locator("canvas").all())
                                  if box and box["width"] > 0 and box["height"] > 0)
    return state


def announce(capsys, what: str, path) -> None:
    """Name a kept artefact (a screenshot) in pytest's output, past its capture, even with -q."""
    with capsys.disabled():
        print(f"\n{what}: {path}")
