"""A Ctrl-C during a resume's merge of the journaled tasks is acted on there, not once a cluster
is up.

A resumed launch first merges every task its journal holds (thousands, on a big batch: minutes),
before any cluster starts. A Ctrl-C whose KeyboardInterrupt Python swallowed there (it landed in
a garbage-collector callback) used to be acted on only at the first-worker wait: the launcher
went on merging, started a cluster, and ignored the user's further Ctrl-Cs meanwhile. The runner
makes that happen every time: on the resume's first merge it runs a collection whose callback
sends the process its own SIGINT."""
from __future__ import annotations

import os
import subprocess

from conftest import ALLOW_TEST_WRAPPERS, BIN, TESTS
from proc_watch import new_marker, wait_until_gone
from resqmp.errors import ExitCode
from test_lost_interrupt import launch_interrupted, results_in_journal

# Runs `resqmp ARGS...`; the first merge of a journaled task is followed by a SIGINT that lands
# inside a garbage-collector callback (swallowed by Python, recorded by resqmp).
RUNNER = r'''
import gc, os, signal, sys, time


def main():
    from resqmp.recombine import Recombiner
    offer = Recombiner.offer
    fired = []

    def during_collection(phase, info):
        if phase == "start" and fired == [0]:
            fired[0] = 1
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)             # the handler runs here, inside the callback

    def offer_then_collect(self, *args, **kwargs):
        offer(self, *args, **kwargs)
        if not fired:
            fired.append(0)
            gc.callbacks.append(during_collection)
            gc.collect()

    Recombiner.offer = offer_then_collect
    from resqmp.cli import console_main as resqmp_main
    sys.argv = ["resqmp", *sys.argv[1:]]
    resqmp_main()


if __name__ == "__main__":        # local workers are spawned: they import this file again
    main()
'''


def test_a_ctrl_c_swallowed_during_the_resume_merge_stops_before_any_cluster(slow, tmp_path):
    out = tmp_path / "faults.epc"
    args = ["launch", "--profile", "local", "--batch", slow["batch"], "--output", out, *ALLOW_TEST_WRAPPERS]
    # a first run, interrupted once two tasks are journaled
    code, stdout, stderr = launch_interrupted(tmp_path, args, out, after=2)
    assert code == ExitCode.INTERRUPTED, stdout + stderr
    journaled = results_in_journal(out)
    assert 2 <= journaled < 8

    # the resume: the Ctrl-C lands in its first merge of a journaled task
    runner = tmp_path / "resume_with_gc_sigint.py"
    runner.write_text(RUNNER)
    marker = new_marker()
    env = {**os.environ, **marker, "PYTHONPATH": str(TESTS)}
    resumed = subprocess.run([str(BIN / "python"), str(runner), *map(str, args)], cwd=tmp_path,
                             capture_output=True, text=True, env=env, timeout=300)
    said = resumed.stdout + resumed.stderr
    assert resumed.returncode == ExitCode.INTERRUPTED, said
    assert "Exception ignored" not in said and "Traceback" not in said, said
    assert resumed.stderr.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), said
    assert "resuming:" in said and "cluster up" not in said, said        # stopped before any cluster
    assert wait_until_gone(marker, timeout=60) == []
    assert not out.exists()
    assert results_in_journal(out) == journaled                            # the journal is kept as it was
