"""A Ctrl-C that Python cannot deliver where it lands is not lost.

Python runs a signal handler between bytecodes of the main thread; when those bytecodes belong to
a garbage-collector or weakref callback, the KeyboardInterrupt the handler raises is swallowed
("Exception ignored in ...", with a traceback) and the program goes on. Once in the suite, a
launch's first Ctrl-C was swallowed that way and the run went on. These tests make it happen every
time: the command runs under a GC callback that, once the test says so, sends the process its own
SIGINT while the callback runs in the main thread — a Ctrl-C arriving during a collection."""
from __future__ import annotations

import os
import subprocess
import threading

from conftest import ALLOW_TEST_WRAPPERS, BIN, TESTS
from proc_watch import new_marker, wait_for, wait_until_gone
from resqmp.errors import ExitCode

# Runs `resqmp ARGS...`; SIGINT is sent from inside a main-thread GC callback once TRIGGER exists.
RUNNER = r'''
import gc, os, signal, sys, threading, time

def main():
    trigger = os.environ["RESQMP_TEST_SIGINT_TRIGGER"]
    fired = []

    def during_collection(phase, info):
        if fired or phase != "start" or threading.current_thread() is not threading.main_thread():
            return
        if os.path.exists(trigger):
            fired.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)          # the handler runs here, inside the callback

    gc.callbacks.append(during_collection)
    gc.set_threshold(20)              # frequent collections: the main thread's next one comes soon
    from resqmp.cli import console_main as resqmp_main
    sys.argv = ["resqmp", *sys.argv[1:]]
    resqmp_main()

if __name__ == "__main__":
    main()
'''


def start(tmp_path, args, marker, cwd=None) -> tuple[subprocess.Popen, object]:
    runner = tmp_path / "run_with_gc_sigint.py"
    runner.write_text(RUNNER)
    trigger = tmp_path / "sigint-now"
    env = {**os.environ, **marker, "PYTHONPATH": str(TESTS), "RESQMP_TEST_SIGINT_TRIGGER": str(trigger)}
    proc = subprocess.Popen([str(BIN / "python"), str(runner), *map(str, args)], cwd=cwd or tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    return proc, trigger


def results_in_journal(out) -> int:
    path = out.with_name(out.stem + ".journal.jsonl")
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def launch_interrupted(tmp_path, args, out, after: int) -> tuple[int, str, str]:
    """`resqmp ARGS` (a launch writing OUT), sent a Ctrl-C inside a GC callback once `after` results
    are journaled; (exit code, stdout, stderr), once no process of it is left."""
    marker = new_marker()
    proc, trigger = start(tmp_path, args, marker)
    try:
        wait_for(lambda: results_in_journal(out) >= after or proc.poll() is not None, what=f"{after} results")
        trigger.touch()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until_gone(marker, timeout=60) == []
    return proc.returncode, stdout, stderr


def test_launch_acts_on_a_ctrl_c_swallowed_by_a_gc_callback(slow, tmp_path):
    out = tmp_path / "faults.epc"
    args = ["launch", "--profile", "local", "--batch", slow["batch"], "--output", out, *ALLOW_TEST_WRAPPERS]
    code, stdout, stderr = launch_interrupted(tmp_path, args, out, after=1)
    assert code == ExitCode.INTERRUPTED, stdout + stderr
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), stderr
    assert not out.exists()
    # what ran is kept: the same command resumes
    assert results_in_journal(out) >= 1


def _check_interrupted(tmp_path, after_line: str) -> tuple[int, str, str, dict]:
    from test_profiles_check import stages
    marker = new_marker()
    proc, trigger = start(tmp_path, ["profiles", "check", "local"], marker)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(ln.startswith("ok") and f" {after_line} " in ln for ln in lines)
                 or proc.poll() is not None, timeout=300, what=f"the {after_line} stage")
        trigger.touch()
        proc.wait(timeout=300)
        reader.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until_gone(marker, timeout=60) == []
    out = "".join(lines)
    return proc.returncode, out, proc.stderr.read(), stages(out)


def test_check_acts_on_a_ctrl_c_swallowed_by_a_gc_callback(tmp_path):
    code, out, err, seen = _check_interrupted(tmp_path, "joined")
    assert code == ExitCode.INTERRUPTED, out + err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert "interrupted" in {status for status, _ in seen.values()}, out
    assert seen["teardown"][0] == "ok", out
    assert err.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), err


def test_a_ctrl_c_during_the_checks_teardown_lets_it_finish(tmp_path):
    # the run stage has passed: the signal lands in the teardown (or after it), never breaks into it
    code, out, err, seen = _check_interrupted(tmp_path, "run")
    assert code == ExitCode.INTERRUPTED, out + err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert seen["teardown"][0] == "ok", out
    assert err.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), err
