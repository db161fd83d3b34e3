"""Progress: a rich bar on a terminal, plain log lines otherwise (batch jobs, CI logs)."""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from resqmp.text import printable


class ProgressReport:
    def __init__(self, total: int, already_done: int = 0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.failed, self.resumed = total, already_done, 0, already_done
        self.start = time.monotonic()
        self.console = Console(file=self.stream)
        self.bar = None
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("[bold]tasks"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("failed {task.fields[failed]}"),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=self.console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("tasks", total=total, completed=already_done, failed=0, rate="")

    def begin(self) -> None:
        """Tasks are being submitted: rate and ETA count from here, not from cluster start."""
        self.start = time.monotonic()
        if self.bar is not None:
            self.bar.reset(self.task, total=self.total, completed=self.done, failed=self.failed, rate="")

    def reopen(self) -> None:
        """A task counted done as resumed runs again after all (its journaled output was damaged)."""
        self.done -= 1
        self.resumed -= 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)

    def info(self, message: str, style: str | None = None) -> None:
        """One line for the user. Its text may hold a batch's names, paths and errors: shown
        printable (resqmp.text), and on a terminal never read as rich markup ('[...]')."""
        message = printable(message)
        if self.bar is not None:
            self.bar.console.print(Text(message, style=style or ""))
        else:
            print(f"resqmp: {message}", file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        if self.bar is not None:
            self.info(f"warning: {message}", style="yellow")
        else:
            self.info(f"warning: {message}")

    def advance(self, result: dict, name: str | None) -> None:
        self.done += 1
        if not result.get("success"):
            self.failed += 1
        elapsed = time.monotonic() - self.start
        rate = (self.done - self.resumed) / elapsed if elapsed > 0 else 0.0
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, failed=self.failed, rate=f"{rate:.1f}/s")
            if result.get("error"):
                self.info(f"task {result['index']}{_label(name)} failed: {result['error']}", style="red")
        else:
            state = "ok" if result.get("success") else f"FAILED: {result.get('error') or 'wrapper reported failure'}"
            secs = result.get("seconds")
            took = f" in {secs:.2f} s" if secs is not None else ""
            self.info(f"task {result['index']}{_label(name)} {state}{took} "
                      f"[{self.done}/{self.total} done, {self.failed} failed, {rate:.1f}/s]")

    def stalled(self, idle: float, running: list[dict], waiting: int, next_after: float,
                names: list[str | None]) -> None:
        """No task has finished for `idle` seconds: which tasks run on which worker, for how long."""
        lines = [f"no task has finished for {idle:.0f} s (tasks.stall_after); next report after "
                 f"{next_after:.0f} s" + ("; still running:" if running else "; none is running")]
        for r in running:
            lines.append(f"  task {r['index']} ({names[r['index']] or ''}) on {r['worker']} for {r['seconds']:.0f} s")
        if waiting:
            lines.append(f"  {waiting} task{'s' if waiting != 1 else ''} not started (waiting for a free worker)")
        for line in lines:
            self.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _label(name: str | None) -> str:
    return f" ({name})" if name else ""
