"""The dashboard link `resqmp launch` prints, opened in a real browser (headless Chromium) while
the batch runs: the status page must render its Bokeh plots, not "Dask needs bokeh"."""
from __future__ import annotations

import getpass
import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from browser import DASHBOARD_STATE_JS, announce, chromium_page, dashboard_state
from conftest import BIN, TESTS
from live_launch import LINK, Launch, gated_batch
from proc_watch import wait_for
from test_performance_report import assert_complete_report


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


def test_the_printed_dashboard_link_renders_during_a_local_launch(example, tmp_path, capsys):
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
    announce(capsys, "dashboard screenshot", screenshot)


# --------------------------------------------------------------------------- what each backend prints

def _describe_jobqueue(tmp_path, *overrides):
    """resqmp's dashboard lines for a real (SLURM) jobqueue cluster with no worker jobs."""
    from distributed import Client
    from resqmp import dashboard, profiles
    from resqmp.backends import for_profile
    from resqmp.worker_env import worker_environment
    p = profiles.load("slurm", [f"storage.shared_directory={tmp_path}", *overrides])
    cluster = for_profile(p, worker_environment(p)).start()
    try:
        with Client(cluster) as client:
            return dashboard.describe(client, cluster)
    finally:
        cluster.close()


def test_jobqueue_dashboard_is_off_and_the_message_names_the_one_setting_that_turns_it_on(tmp_path):
    link, lines = _describe_jobqueue(tmp_path)
    assert link is None
    assert len(lines) == 1 and lines[0].startswith("dashboard: off (every user of this host could open it;")
    setting = re.search(r"--set (\S+)\)$", lines[0]).group(1)
    # exactly what the message says, typed as a user would
    link, lines = _describe_jobqueue(tmp_path, setting)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/status", link), link
    port = re.search(r":(\d+)/", link).group(1)
    assert lines[0] == f"dashboard: {link}"
    assert lines[1].startswith(f"dashboard from your own machine: ssh -N -L {port}:127.0.0.1:{port} "
                               f"{getpass.getuser()}@{socket.getfqdn()} ")
    assert lines[1].endswith(f"then open http://localhost:{port}/status")


@pytest.fixture
def external_scheduler(tmp_path):
    """Real `dask scheduler` processes started outside resqmp: name -> address."""
    procs, addresses = [], {}

    def start(name, *args):
        sched_file = tmp_path / f"{name}.json"
        procs.append(subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--dashboard-address", "127.0.0.1:0", *args,
                                       "--scheduler-file", str(sched_file)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 120, "the scheduler file")
        addresses[name] = json.loads(sched_file.read_text())["address"]
        return addresses[name]
    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=60)


def test_external_scheduler_link_is_printed_only_when_it_serves_a_dashboard(external_scheduler):
    from distributed import Client
    from resqmp import dashboard
    from resqmp.backends.external import ExternalCluster
    for name, args in (("with", ()), ("without", ("--no-dashboard",))):
        address = external_scheduler(name, *args)
        with Client(address) as client:
            link, lines = dashboard.describe(client, ExternalCluster(address, None, 2))
            expected = client.dashboard_link
        if name == "with":
            assert link == expected and lines == [f"dashboard: {expected}"]
        else:      # distributed still names a link (its HTTP server runs for /health): it is dead
            assert link is None
            assert lines == [f"dashboard: none at {expected} (the scheduler answers HTTP 404: started without a dashboard)"]


def test_a_scheduler_without_bokeh_is_named_as_such(external_scheduler, tmp_path, monkeypatch):
    """distributed serves "Dask needs bokeh" at the link when the scheduler cannot import bokeh:
    the link is not printed as a dashboard, the line says what the scheduler lacks."""
    from distributed import Client
    from resqmp import dashboard
    from resqmp.backends.external import ExternalCluster
    shadow = tmp_path / "no-bokeh" / "bokeh"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("bokeh is not installed here")\n')
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))     # the scheduler's environment only
    address = external_scheduler("no-bokeh")
    with Client(address) as client:
        link, lines = dashboard.describe(client, ExternalCluster(address, None, 2))
        expected = client.dashboard_link
    assert link is None
    assert lines == [f"dashboard: none at {expected} (the scheduler's Python environment lacks bokeh>=3.1.0)"]


def _status_sessions(dask_scheduler=None) -> int:
    """Bokeh sessions the scheduler holds for its status page (each one updates its plots)."""
    bokeh = next(app for app in dask_scheduler.http_application.applications if hasattr(app, "get_sessions"))
    return len(bokeh.get_sessions("/status"))


def test_checking_the_link_builds_no_dashboard_session(tmp_path):
    """The launcher checks the link it prints without opening the status page: each opening makes
    the scheduler (in the launcher's process, for the local and jobqueue backends) build a Bokeh
    session and update its plots until the session expires."""
    import urllib.request
    from distributed import Client
    from resqmp import dashboard, profiles
    from resqmp.backends import for_profile
    from resqmp.worker_env import worker_environment
    from resqmp.run import _process_state_restored
    p = profiles.load("local", [f"storage.shared_directory={tmp_path}", "scaling.workers=1"])
    # the local backend puts its worker environment in this process's environment and dask config
    # for the launch (run.py restores them): later tests' plain clusters must not inherit it
    with _process_state_restored():
        cluster = for_profile(p, worker_environment(p)).start()
        try:
            with Client(cluster) as client:
                link, lines = dashboard.describe(client, cluster)
                assert link and lines[0] == f"dashboard: {link}"
                assert client.run_on_scheduler(_status_sessions) == 0
                urllib.request.urlopen(link, timeout=30).read()        # a person opening it: one session
                assert client.run_on_scheduler(_status_sessions) == 1
        finally:
            cluster.close()


def test_kubernetes_in_cluster_link_comes_with_the_port_forward_line():
    from types import SimpleNamespace
    from resqmp.backends import kubernetes
    cluster = SimpleNamespace(namespace="geo", name="resqmp-ab12")   # KubeCluster's two attributes used
    assert kubernetes.dashboard_access(cluster, "http://resqmp-ab12-scheduler.geo:8787/status") == (
        "dashboard from your own machine: kubectl -n geo port-forward svc/resqmp-ab12-scheduler 8787:8787, "
        "then open http://localhost:8787/status")
    # outside the cluster KubeCluster forwards the port itself: the localhost link works as printed
    assert kubernetes.dashboard_access(cluster, "http://localhost:40123/status") == ""


# --------------------------------------------------------------------------- SLURM, dashboard on

@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_slurm_dashboard_turned_on_renders_from_the_launcher_host(slurm, hpc_example, hpc_workdir, tmp_path, capsys):
    from hpc_fixtures import PROFILES, SGE_ENV
    folder = hpc_workdir / "dashboard"
    folder.mkdir()
    batch, gate = gated_batch(hpc_example, folder)
    tasks = len(yaml.safe_load(batch.read_text())["tasks"])
    out, screenshot = folder / "out.epc", tmp_path / "dashboard-slurm.png"   # hpc_workdir goes with the session
    perf = tmp_path / "slurm.perf.html"           # and the performance report of a TLS jobqueue run
    run = Launch("--profile", PROFILES["slurm"], "--batch", batch, "--output", out, "--performance-report", perf,
                 "--set", "cluster.scheduler_options.dashboard_address=127.0.0.1:0",
                 "--set", f"environment.PYTHONPATH={TESTS}", env=SGE_ENV)
    try:
        link = run.wait_for_line(LINK).group(1)
        port = re.search(r":(\d+)/", link).group(1)
        tunnel = run.wait_for_line(re.compile(r"dashboard from your own machine: (ssh .*)")).group(1)
        assert tunnel.startswith(f"ssh -N -L {port}:127.0.0.1:{port} ")
        assert link.startswith("http://127.0.0.1:")
        state = check_status_page(link, screenshot)
        gate.touch()
        assert run.finish() == 0, "\n".join(run.lines)
    finally:
        gate.touch()
        run.stop()
    assert_plots_rendered(state, tasks)
    announce(capsys, "dashboard screenshot", screenshot)
    report = json.loads(out.with_name("out.report.json").read_text())
    assert report["dashboard"] == link and report["performance_report"] == str(perf)
    assert_complete_report(perf, tasks)
