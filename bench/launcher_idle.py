"""What a launcher-like process spends per second of wall while no task finishes: a LocalCluster of
W worker processes (scheduler and nannies in this process, as `resqmp launch --profile local` has
them) plus a Client, idle for --seconds, with distributed's defaults and with resqmp's
LAUNCHER_DASK_CONFIG (resqmp/run.py). Prints this process's CPU (rusage, user + sys) per wall
second for each; not part of the test suite.

    .venv/bin/python bench/launcher_idle.py --workers 2 8
    .venv/bin/python bench/launcher_idle.py --workers 2 --dashboard    # what checking the link costs

With --dashboard the cluster serves its dashboard, and the CPU is measured after the check
`resqmp launch` makes of the link it prints (resqmp.dashboard.describe) and, on another cluster,
after opening the status page once (what that check did until 3 Dec 2026: the scheduler then
builds a Bokeh session and updates its plots until the session expires).
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import dask
from distributed import Client, LocalCluster

from resqmp.run import LAUNCHER_DASK_CONFIG


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def idle_cpu(workers: int, config: dict, seconds: float) -> float:
    """ms of this process's CPU per wall second, cluster up and idle."""
    with dask.config.set(config):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster):
            time.sleep(3)          # start-up over
            c0, t0 = _cpu(), time.monotonic()
            time.sleep(seconds)
            return 1000 * (_cpu() - c0) / (time.monotonic() - t0)


def after_dashboard_check(workers: int, config: dict, seconds: float, open_page: bool) -> tuple[float, float]:
    """(CPU seconds of the check itself, ms of CPU per wall second over the next `seconds`)."""
    import urllib.request
    from resqmp import dashboard
    with dask.config.set(config):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            time.sleep(3)
            c0 = _cpu()
            if open_page:
                urllib.request.urlopen(client.dashboard_link, timeout=30).read()
            else:
                cluster.dashboard_off, cluster.dashboard_access = "", lambda link: ""   # describe's two attributes
                assert dashboard.describe(client, cluster)[0] == client.dashboard_link
            c1, t1 = _cpu(), time.monotonic()
            time.sleep(seconds)
            return c1 - c0, 1000 * (_cpu() - c1) / (time.monotonic() - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dashboard", action="store_true", help="measure the dashboard check instead")
    args = parser.parse_args()
    ours = {key: value for key, (_, value) in LAUNCHER_DASK_CONFIG.items()}
    print(f"load before: {os.getloadavg()[0]:.2f}")
    if args.dashboard:
        print("| workers | check | CPU of the check (s) | then ms CPU / wall s (resqmp's launcher settings) |")
        print("|---:|---|---:|---:|")
        for w in args.workers:
            for name, open_page in (("HEAD of Bokeh's script (resqmp.dashboard)", False), ("the status page opened", True)):
                check, after = after_dashboard_check(w, ours, args.seconds, open_page)
                print(f"| {w} | {name} | {check:.2f} | {after:.1f} |")
        print(f"load after: {os.getloadavg()[0]:.2f}")
        return
    print("| workers | distributed's defaults (ms CPU / wall s) | resqmp's launcher settings | settings |")
    print("|---:|---:|---:|---|")
    for w in args.workers:
        default, tuned = idle_cpu(w, {}, args.seconds), idle_cpu(w, ours, args.seconds)
        print(f"| {w} | {default:.1f} | {tuned:.1f} | {ours} |")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
