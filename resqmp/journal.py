"""A journal of completed tasks beside the output, so the same command resumes after a kill.

OUT.journal.jsonl: a header line naming the batch digest, then one JSON line per finished task,
appended as each result arrives (a line cut by a kill is dropped on reading). Each line reaches
the operating system at once, so a killed launcher loses none; fsync, which only a crash of the
machine needs, runs with a line written SYNC_SECONDS or more after the last one, and on close: a
line lost that way only means its task runs again.
The open journal holds an exclusive lock: a second launch writing the same OUT is refused.
Everything in it is checked when it is opened, before any work: a journal that cannot be resumed
from is refused then (--fresh starts over), never after every task ran again. A file there that
does not start with resqmp's header is not ours: it is neither resumed from nor replaced, not even
with --fresh (it may be the user's own file of that name).
A line that is no result resqmp writes (not JSON, a field of another type, an index outside the
batch) is refused likewise. A well-formed success counts as done only while its output EPC is a
file in this run's task folder; any other (no file named, a file gone or elsewhere) is not done:
its task runs again, and warning() says so in one line.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path

from resqmp.errors import BatchError, OutputError
from resqmp.outputs import journal_path

__all__ = ["Journal", "journal_path", "locked_if_there"]

#: the longest a journal line waits for fsync (one fsync per task cost the launcher 0.24 ms/task)
SYNC_SECONDS = 0.1


def _open_in_place(output: Path, path: Path):
    """The journal, opened for appending. Unlike OUT's other files (renamed into place) it is
    written and truncated in place, so it must be a file of its own: never opened through a
    symbolic link (O_NOFOLLOW) nor a file with other names (hard links), whose bytes it would
    truncate; a planted link to another model must not cost that model a byte."""
    hint = "resqmp appends to its journal in place and writes through no link: remove it, or choose another --output"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise OutputError(f"output {output}: its journal {path} is a symbolic link to {os.readlink(path)}; "
                              f"{hint}") from None
        raise OutputError(f"output {output}: cannot write its journal {path} ({e.strerror})") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_nlink > 1:
        problem = f"is a hard link: the same file has {st.st_nlink} names"
    if problem:
        os.close(fd)
        raise OutputError(f"output {output}: its journal {path} {problem}; {hint}")
    return os.fdopen(fd, "a+b")


#: how every journal starts (Journal._start): a first line cut short by a kill is a prefix of it
_HEADER_START = b'{"digest": "'


def _written_by_resqmp(data: bytes) -> bool:
    """The file starts with a journal's header (Journal._start): a first line that is a mapping
    with the batch's digest, or, as the file's only line, the start of one cut short by a kill."""
    first, newline, _ = data.partition(b"\n")
    if not newline:
        return _HEADER_START.startswith(first) or first.startswith(_HEADER_START)
    try:
        header = json.loads(first.decode("utf-8"))
    except (ValueError, RecursionError):     # not JSON, not UTF-8, or nested deeper than json reads
        return False
    return isinstance(header, dict) and isinstance(header.get("digest"), str)


@contextmanager
def locked_if_there(output: Path):
    """OUT's journal, when there is one, locked as a launch locks it, without creating it or
    changing a byte: yields True while held. False (nothing held) when there is none, it is no
    regular file, or another launch holds it. A launch whose checks must see OUT as a killed launch
    left it put back (run.py) holds this; the journal itself is checked and locked by Journal."""
    try:
        fd = os.open(journal_path(output), os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        held = stat.S_ISREG(os.fstat(fd).st_mode)
        if held:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                held = False
        yield held
    finally:
        os.close(fd)       # releases the lock


class Journal:
    def __init__(self, output: Path, digest: str, run_dir: Path, n_tasks: int, fresh: bool = False):
        self.path = journal_path(output)
        self.digest = digest
        self.n_tasks = n_tasks
        self.run_dir = run_dir
        self.done: dict[int, dict] = {}
        #: success records not taken as done (their task runs again): index -> (line, why)
        self.not_done: dict[int, tuple[int, str]] = {}
        self._synced = 0.0
        self._file = _open_in_place(output, self.path)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise OutputError(f"output {output}: another resqmp launch is writing it "
                              f"(its journal {self.path} is locked)") from None
        try:
            self._file.seek(0)
            data = self._file.read()
            if not data.strip():
                self._start()
            elif not _written_by_resqmp(data):
                raise OutputError(f"journal {self.path}: line 1: not a resqmp journal header, so not a resqmp "
                                  f"journal; resqmp neither resumes from it nor replaces it, not even with "
                                  f"--fresh: move it, or choose another --output")
            elif fresh:
                self._start()
            else:
                self._read(data)
        except BaseException:
            self._file.close()
            raise

    def _start(self) -> None:
        self._file.truncate(0)
        self._write({"digest": self.digest, "run_dir": str(self.run_dir)})

    def _unusable(self, line: int, what: str) -> OutputError:
        return OutputError(f"journal {self.path}: line {line}: {what}; it cannot be resumed from: "
                           f"rerun with --fresh to start over (the journal is then replaced)")

    def _read(self, data: bytes) -> None:
        """Load completed results. Refuses (before any work) whatever would fail later."""
        # the last line of a killed run may be cut short: it is dropped (so the next record appended
        # starts on a line of its own); the file starts with our header (_written_by_resqmp)
        keep = data.rfind(b"\n") + 1
        data, cut = data[:keep], data[keep:]
        if not data:
            self._start()                   # a header cut by a kill: nothing was recorded yet
            return
        self._load(data)
        if cut:
            self._file.truncate(keep)

    def _load(self, data: bytes) -> None:
        lines = data.split(b"\n")[:-1]
        texts = []
        for n, raw in enumerate(lines, 1):
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise self._unusable(n, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
        header = self._json(texts[0], 1)        # a mapping with a digest: _written_by_resqmp
        if header["digest"] != self.digest:
            raise BatchError(f"journal {self.path}: the batch changed since this output was started; "
                             f"rerun with --fresh to start over (or restore the batch)")
        for n, text in enumerate(texts[1:], 2):
            if not text.strip():
                continue
            record = self._json(text, n)
            self._check_record(record, n)
            index = record["index"]
            # a result counts only while its output file exists, in this run's task folder: a
            # record naming no file, or any other file (an edited journal, an earlier
            # storage.shared_directory), would leave the task out of OUT, or merge a model this
            # batch did not make into it, while the run reports success; that task runs again
            why = self._not_done(record) if record["success"] else None
            if record["success"] and why is None:
                if "partial" in record and not (isinstance(record["partial"], str) and self._ours(record["partial"])):
                    del record["partial"]       # its group partial is gone: the task's own file merges
                self.done[index] = record
                self.not_done.pop(index, None)
            else:
                self.done.pop(index, None)
                if why is None:
                    self.not_done.pop(index, None)      # its last record is a failure: it runs again
                else:
                    self.not_done[index] = (n, why)

    def _not_done(self, record: dict) -> str | None:
        """Why a success record cannot be taken as done, or None when its output file backs it."""
        epc = record["epc_file"]
        if not epc:
            # resqpy's contract allows it (nothing to merge), but nothing shows the task finished:
            # the same record is what an edit that dropped its file leaves; running it again is safe
            return "a success with no output file"
        if not os.path.exists(epc):
            return f"its output {epc} is gone"
        if not self._ours(epc):
            return f"its output {epc} is not in this run's task folder {self.run_dir}"
        if not (epc.endswith(".epc") and os.path.isfile(epc)):
            return f"its output {epc} is not an EPC file"
        return None

    def warning(self) -> str | None:
        """One line naming the tasks whose success records are not taken as done (they run again)."""
        if not self.not_done:
            return None
        shown = [f"task {i} (line {n}): {why}" for i, (n, why) in sorted(self.not_done.items())[:3]]
        more = len(self.not_done) - len(shown)
        count = len(self.not_done)
        return (f"journal {self.path}: {count} task{'s' * (count != 1)} recorded as finished "
                f"{'are' if count != 1 else 'is'} not taken as done and run{'s' * (count == 1)} again: "
                + "; ".join(shown) + (f"; and {more} more" if more else ""))

    def _ours(self, epc: str) -> bool:
        return os.path.exists(epc) and Path(epc).resolve().is_relative_to(Path(self.run_dir).resolve())

    def _json(self, text: str, n: int):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise self._unusable(n, f"not JSON ({e.msg})") from None
        except RecursionError:     # json.loads's own limit: no result of a task is nested so deep
            raise self._unusable(n, "not a task's result (nested deeper than JSON can be read)") from None

    def _check_record(self, record, n: int) -> None:
        if not isinstance(record, dict):
            raise self._unusable(n, "expected a task's result (a mapping)")
        index = record.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.n_tasks:
            raise self._unusable(n, f"task index {index!r} is outside the batch (tasks 0 to {self.n_tasks - 1})")
        if not isinstance(record.get("success"), bool):
            raise self._unusable(n, f"task {index}: 'success' must be true or false")
        if record["success"]:
            epc, uuids = record.get("epc_file", 0), record.get("uuid_list")
            if not (epc is None or isinstance(epc, str)) or not (
                    isinstance(uuids, list) and all(isinstance(u, str) for u in uuids)):
                raise self._unusable(n, f"task {index}: expected 'epc_file' (a path or null) and "
                                        f"'uuid_list' (a list of uuids)")

    def _write(self, record: dict, sync: bool = True) -> None:
        self._write_lines([record], sync)

    def _write_lines(self, records: list[dict], sync: bool) -> None:
        self._file.write("".join(json.dumps(record) + "\n" for record in records).encode())
        self._file.flush()
        if sync or time.monotonic() - self._synced >= SYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def record(self, result: dict) -> None:
        self.record_all([result])

    def record_all(self, results: list[dict]) -> None:
        """Several results in one write (a group's: run.py journals them before merging any)."""
        self._write_lines([{k: v for k, v in result.items() if k != "traceback"} for result in results],
                          sync=False)

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._sync()
            except OSError:
                pass         # closing after a failed write: the lines already written stay
            self._file.close()

    def remove(self) -> None:
        # A launch that opens the path from now on makes a journal (and a lock) of its own: the
        # caller has set aside what it must still remove at a path every run on OUT uses
        self.path.unlink(missing_ok=True)
        self.close()
