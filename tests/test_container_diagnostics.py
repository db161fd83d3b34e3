"""The dashboard and the performance report in the image, as the Helm chart's standalone mode runs
them (`podman kube play`, see test_container.py): bokeh is in the image, the scheduler pod serves
a dashboard that renders in headless Chromium, and `launch.performanceReport` leaves a complete
report on the shared volume, named in the run report."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
import yaml

from browser import announce, chromium_page, dashboard_state
from k8s_fixtures import *  # noqa: F401,F403 - fixtures
from k8s_fixtures import helm_template, podman
from test_container import _for_podman, _free_port
from test_performance_report import assert_complete_report

pytestmark = pytest.mark.podman


def test_chart_dashboard_and_performance_report_in_the_image(resqmp_image, helm, tmp_path, capsys):
    suffix = secrets.token_hex(3)
    release, volume = f"kd{suffix}", f"resqmp-test-{suffix}"
    port, dashboard = _free_port(), _free_port()
    repo, tag = resqmp_image.rsplit(":", 1)
    objects = helm_template(helm, release=release, tmp_dir=tmp_path, values={
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "storage": {"existingClaim": volume},
        "cluster": {"mode": "standalone", "address": f"tcp://127.0.0.1:{port}", "schedulerPort": port,
                    "schedulerDashboardPort": dashboard, "workers": 1, "workerProcesses": 2,
                    "workerDashboard": False, "workerTimeout": 300},
        "example": {"enabled": True, "directory": "/shared/example", "surfaces": 4},
        "output": {"path": "/shared/output/faults.epc"},
        "launch": {"performanceReport": "/shared/reports/faults.perf.html"},
    })
    kube = tmp_path / "kube.yaml"
    kube.write_text(yaml.safe_dump_all(_for_podman(objects, suffix), sort_keys=False))
    podman("volume", "create", volume)
    mountpoint = podman("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip()
    os.chown(mountpoint, 1000, 1000)
    launcher = f"{release}-resqmp-launch-launcher"
    configmaps = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    try:
        podman("kube", "play", "--network", "host", str(kube), timeout=300)
        code = podman("wait", launcher, timeout=900).stdout.strip()
        logs = podman("logs", launcher, check=False)
        log_text = logs.stdout + logs.stderr
        assert code == "0", log_text[-3000:]
        # the external backend printed the scheduler pod's link, which it found serving a dashboard
        link = f"http://127.0.0.1:{dashboard}/status"
        assert f"dashboard: {link}" in log_text, log_text[-3000:]
        # the scheduler stays up after the Job: its dashboard, rendered by a real browser
        with chromium_page() as page:
            page.goto(link, wait_until="load", timeout=120_000)
            page.wait_for_function("() => typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0 && "
                                   "Bokeh.documents[0].get_model_by_name('task_stream') !== null",
                                   timeout=120_000)
            state = dashboard_state(page)
            shot = tmp_path / "dashboard-chart.png"
            page.screenshot(path=str(shot), full_page=True)
        assert state["title"] == "Dask: Status" and "Dask needs bokeh" not in state["text"]
        assert {"task_stream", "task_progress"} <= set(state["roots"]) and state["drawn_canvases"] >= 5, state
        # the performance report on the shared volume, named in the run report
        shared = Path(mountpoint)
        report = json.loads((shared / "output" / "faults.report.json").read_text())
        assert report["performance_report"] == "/shared/reports/faults.perf.html"
        assert_complete_report(shared / "reports" / "faults.perf.html", report["totals"]["tasks"])
        assert [p.name for p in (shared / "reports").iterdir()] == ["faults.perf.html"]
        announce(capsys, "dashboard screenshot", shot)
    finally:
        podman("kube", "down", str(kube), check=False)
        for name in podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split():
            if name == volume or name in configmaps or name.endswith(f"-{suffix}"):
                podman("volume", "rm", "-f", name, check=False)
