"""What a launcher-like process spends per second of wall while no task finishes: a LocalCluster of
W worker processes (scheduler and nannies in this process, as `resqmp launch --profile local` has
them) plus a Client, idle for --seconds, with distributed's defaults and with resqmp's
LAUNCHER_DASK_CONFIG (resqmp/run.py). Prints this process's CPU (rusage, user + sys) per wall
second for each; not part of the test suite.

    .venv/bin/python bench/launcher_idle.py --workers 2 8
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    ours = {key: value for key, (_, value) in LAUNCHER_DASK_CONFIG.items()}
    print(f"load before: {os.getloadavg()[0]:.2f}")
    print("| workers | distributed's defaults (ms CPU / wall s) | resqmp's launcher settings | settings |")
    print("|---:|---:|---:|---|")
    for w in args.workers:
        default, tuned = idle_cpu(w, {}, args.seconds), idle_cpu(w, ours, args.seconds)
        print(f"| {w} | {default:.1f} | {tuned:.1f} | {ours} |")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
