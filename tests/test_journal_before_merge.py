"""Every record fetched from the cluster is journaled before the launcher merges anything, and a
Ctrl-C journals what was already fetched: a resume never runs a finished task again.

Results come back from Dask a group at a time (execute.run_on_client). The launcher journaled one
record, merged it (ms per task), then journaled the next: a Ctrl-C landing in the merge of a
group's first record lost the rest of that group, and every group already fetched and queued
behind it, so the same command ran all of them again (hours of cluster time on real sites).

The end-to-end test sends the launcher its own SIGINT from inside Recombiner.offer (the merge of a
task), on its 2nd call: the signal lands in the merge of the 2nd record of the first group back,
deterministically. The LocalCluster test stops run_on_client in on_result once every other group
is back in its queue, and checks which records reach the journal hook then."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from distributed import Client

from conftest import ALLOW_TEST_WRAPPERS, BIN, TESTS, run_resqmp
from epc_compare import content
from proc_watch import new_marker, wait_for, wait_until_gone
from resqmp.errors import ExitCode
from resqmp.execute import run_on_client
from test_reliability import journal_records

GROUP = 4
#: the signal lands in the merge of this call of Recombiner.offer (1-based): the 2nd task of a group
SIGNAL_AT = 2

# Runs `resqmp ARGS...`; the OFFER_CALL-th Recombiner.offer sends the process its own SIGINT, which
# Python raises right there, in the main thread: a Ctrl-C during a task's merge.
RUNNER = r'''
import os, signal, sys

def main():
    at = int(os.environ["RESQMP_TEST_SIGINT_AT_OFFER"])
    from resqmp.recombine import Recombiner
    offer, calls = Recombiner.offer, []

    def offer_then_signal(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGINT)
        return offer(self, *args, **kwargs)

    Recombiner.offer = offer_then_signal
    from resqmp.cli import main as resqmp_main
    sys.argv = ["resqmp", *sys.argv[1:]]
    resqmp_main()

if __name__ == "__main__":
    main()
'''


def test_a_ctrl_c_during_a_merge_journals_the_whole_group_and_the_resume_runs_none_of_it(slow, tmp_path):
    out = tmp_path / "faults.epc"
    runner = tmp_path / "run_with_sigint_at_offer.py"
    runner.write_text(RUNNER)
    args = ["launch", "--profile", "local", "--workers", "2", "--set", f"tasks.group_size={GROUP}",
            "--batch", slow["batch"], "--output", out]
    marker = new_marker()
    env = {**os.environ, **marker, "PYTHONPATH": str(TESTS), "RESQMP_TEST_SIGINT_AT_OFFER": str(SIGNAL_AT)}
    proc = subprocess.run([str(BIN / "python"), str(runner), *map(str, args), *ALLOW_TEST_WRAPPERS],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("resqmp: error: interrupted"), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert wait_until_gone(marker, timeout=60) == []
    assert not out.exists()

    records = journal_records(out)
    journaled = [r["index"] for r in records]
    # whole groups only, at least the one in whose merge the signal landed: more than the
    # SIGNAL_AT - 1 merges that had finished
    assert len(journaled) == len(set(journaled)), journaled
    assert len(journaled) % GROUP == 0 and len(journaled) > SIGNAL_AT - 1, journaled
    assert set(journaled) == {i for g in {i // GROUP for i in journaled} for i in range(g * GROUP, (g + 1) * GROUP)}
    # the fields they always had
    for r in records:
        assert r["success"] is True and r["resumed"] is False and r["attempts"] == 1 and r["lost_workers"] == []
        assert "exception" not in r and r["name"]

    again = run_resqmp(*args)
    assert again.returncode == ExitCode.OK, again.stdout + again.stderr
    assert f"resuming: {len(journaled)} of 8" in again.stderr
    report = json.loads(out.with_name("faults.report.json").read_text())
    assert {t["index"] for t in report["tasks"] if t["resumed"]} == set(journaled)   # not run again
    assert report["totals"]["succeeded"] == 8 and report["totals"]["resumed"] == len(journaled)
    assert content(out) == slow["reference"]
    assert not out.with_name("faults.journal.jsonl").exists()


# --- run_on_client on a real LocalCluster ----------------------------------------------------

@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


def wait_until_all_back(client, prefix: str) -> None:
    """Until the scheduler holds none of the run's Dask tasks: each finished and its future was
    released, which _Finished does right before it queues the records."""
    def ours(dask_scheduler, prefix=prefix) -> int:
        return sum(str(k).startswith(prefix) for k in dask_scheduler.tasks)
    wait_for(lambda: not client.run_on_scheduler(ours), what="the run's Dask tasks to finish")


@pytest.mark.parametrize("retries", [0, 1])
def test_an_interrupt_journals_the_final_records_already_fetched(client, tmp_path, retries):
    """3 groups of 2 on 2 workers; task 5 raises. on_result stops the run (KeyboardInterrupt) at
    the first record it gets, once the two other groups are back in run_on_client's queue. The
    journal hook got that record's group first, whole, then on the way out the queued groups'
    final records, never merged: with retries=0, task 5's failure is final and journaled; with
    retry_on_error and an attempt left it is not (a resume runs it)."""
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    by_index = {i: {"log_dir": str(log_dir), "seconds": 0.3, "fail": i == 5} for i in range(6)}
    events: list[tuple[str, object]] = []
    journaled: list[dict] = []

    def on_final(records: list[dict]) -> None:
        events.append(("journal", [r["index"] for r in records]))
        journaled.extend(records)

    def on_result(record: dict) -> None:
        events.append(("merge", record["index"]))
        wait_until_all_back(client, "jf-")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_on_client(client, "wrappers_for_tests:logged_wrapper", by_index, str(tmp_path), on_result,
                      key_prefix="jf", group_size=2, retries=retries, retry_on_error=True, on_final=on_final)

    first = events[1][1]
    assert first in (0, 2)            # one of the two groups that ran first
    assert events[:2] == [("journal", [first, first + 1]), ("merge", first)]
    assert [e for e in events if e[0] == "merge"] == [("merge", first)]      # nothing else merged
    expected = {0, 1, 2, 3, 4, 5} if retries == 0 else {0, 1, 2, 3, 4}
    assert sorted(r["index"] for r in journaled) == sorted(expected)
    for r in journaled:
        assert r["success"] is (r["index"] != 5)
        assert r["attempts"] == 1 and r["lost_workers"] == [] and "exception" not in r
    # nothing was sent again on the way out: each task ran once
    assert sorted(int(n.split(".")[0]) for n in os.listdir(log_dir)) == list(range(6))


def test_an_interrupt_leaves_a_timed_out_groups_tasks_not_run_out_of_the_journal(tmp_path):
    """Groups of 3 with tasks.timeout 1 s; task 3 runs past it, so its group comes back with task
    3's timed-out record alone (4 and 5 were not run: run_on_client would send them again). The
    run is stopped in on_result of the first group's first record, once that group is back too:
    task 3's failure is final and journaled, tasks 4 and 5 are not, and nothing is sent again.
    A cluster of its own: the worker that timed out is left not taking tasks (never restarted).
    One worker, so the first group is back before the second starts (with two, a loaded machine
    could run the first group past task 3's timeout and bring the groups back the other way)."""
    from distributed import LocalCluster
    log_dir = tmp_path / "calls"
    log_dir.mkdir()
    by_index = {i: {"log_dir": str(log_dir), "seconds": 3.0 if i == 3 else 0.05} for i in range(6)}
    events: list[tuple[str, object]] = []
    journaled: list[dict] = []

    def on_final(records: list[dict]) -> None:
        events.append(("journal", [r["index"] for r in records]))
        journaled.extend(records)

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:

        def on_result(record: dict) -> None:
            events.append(("merge", record["index"]))
            wait_until_all_back(client, "jt-")
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_on_client(client, "wrappers_for_tests:logged_wrapper", by_index, str(tmp_path), on_result,
                          key_prefix="jt", group_size=3, timeout=1.0, on_final=on_final)

    assert events == [("journal", [0, 1, 2]), ("merge", 0), ("journal", [3])]
    assert [(r["index"], r["success"], bool(r.get("timed_out"))) for r in journaled] == [
        (0, True, False), (1, True, False), (2, True, False), (3, False, True)]
    assert all(r["attempts"] == 1 and "exception" not in r for r in journaled)
    assert sorted(int(n.split(".")[0]) for n in os.listdir(log_dir)) == [0, 1, 2, 3]     # 4, 5: never run
