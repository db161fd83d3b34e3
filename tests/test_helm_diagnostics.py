"""The chart's diagnostics, rendered by the real helm binary: `launch.performanceReport` (resqmp
launch --performance-report on the shared volume) and the dashboard lines of NOTES.txt."""
from __future__ import annotations

import subprocess

import pytest
import yaml

from k8s_fixtures import *  # noqa: F401,F403 - fixtures
from k8s_fixtures import CHART, helm_lint, helm_template, validate_k8s


def _job(objects):
    (job,) = [o for o in objects if o["kind"] == "Job"]
    return job["spec"]["template"]["spec"]


def _notes(helm, *sets: str) -> str:
    """NOTES.txt as `helm install` prints it (--dry-run=client: no cluster needed)."""
    args = [a for s in sets for a in ("--set", s)]
    proc = subprocess.run([helm, "install", "t", str(CHART), "--dry-run=client", "--namespace", "batch", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize("mode", ["standalone", "operator"])
def test_performance_report_value_reaches_the_launcher(helm, tmp_path, mode):
    path = "/shared/reports/faults.perf.html"
    sets = (f"cluster.mode={mode}", f"launch.performanceReport={path}")
    assert helm_lint(helm, *sets, tmp_dir=tmp_path).returncode == 0
    objects = helm_template(helm, *sets, tmp_dir=tmp_path)
    for obj in objects:
        validate_k8s(obj)
    spec = _job(objects)
    args = spec["containers"][0]["args"]
    i = args.index("--performance-report")
    assert args[i + 1] == path
    prepare = next(c for c in spec["initContainers"] if c["name"] == "prepare")
    assert "/shared/reports" in prepare["args"][2:]              # its folder exists before the launch
    assert f"Performance report: {path}" in _notes(helm, *sets)


def test_no_performance_report_by_default(helm, tmp_path):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["launch"]["performanceReport"] == ""
    args = _job(helm_template(helm, tmp_dir=tmp_path))["containers"][0]["args"]
    assert "--performance-report" not in args
    assert "Performance report" not in _notes(helm)


@pytest.mark.parametrize("bad", ["launch.performanceReport=reports/perf.html",      # not on a mounted volume
                                 "launch.performanceReport=/shared/reports/",
                                 "launch.performanceReport=3"])
def test_bad_performance_report_values_are_rejected(helm, tmp_path, bad):
    proc = helm_template(helm, bad, tmp_dir=tmp_path, check=False)
    assert proc.returncode != 0 and "performanceReport" in proc.stderr, proc.stderr


def test_notes_say_how_to_reach_the_dashboard_in_both_modes(helm):
    standalone = _notes(helm, "cluster.mode=standalone")
    assert "kubectl -n batch port-forward svc/t-resqmp-scheduler 8787" in standalone
    assert "http://localhost:8787/status" in standalone
    operator = _notes(helm, "cluster.mode=operator")
    # the DaskCluster's name is only known at run time: its scheduler pod carries the release's labels
    assert ("kubectl -n batch port-forward $(kubectl -n batch get pod -o name "
            "-l app.kubernetes.io/instance=t,app.kubernetes.io/component=scheduler) 8787") in operator
    assert "http://localhost:8787/status" in operator


def test_the_operator_notes_selector_matches_the_scheduler_pod_resqmp_creates(helm, tmp_path):
    """The labels NOTES.txt selects on are those of the DaskCluster's scheduler pod, as resqmp
    builds it from the release's profile."""
    from resqmp import profiles
    from resqmp.backends import kubernetes
    from resqmp.worker_env import worker_environment
    (cm,) = [o for o in helm_template(helm, "cluster.mode=operator", tmp_dir=tmp_path) if o["kind"] == "ConfigMap"]
    path = tmp_path / "profile.yaml"
    path.write_text(cm["data"]["profile.yaml"])
    profile = profiles.load(str(path))
    spec = kubernetes.cluster_spec(profile, worker_environment(profile))
    labels = spec["spec"]["scheduler"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "t" and labels["app.kubernetes.io/component"] == "scheduler"
    ports = {p["name"]: p["containerPort"] for p in spec["spec"]["scheduler"]["spec"]["containers"][0]["ports"]}
    assert ports["http-dashboard"] == 8787
