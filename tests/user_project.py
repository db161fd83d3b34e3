"""A user's project for the upload tests: a batch with its own wrapper module beside it, in a
folder outside tests/ (tests/ is on PYTHONPATH of every `resqmp` the tests run), so only an upload
brings the module to the workers.

The wrapper runs resqpy's find faces after recording, for each task, which copy of the module ran
(`__file__`, VERSION), on which worker, from which working directory. It can hold a task until a
file exists or until tasks have been seen on N workers: waits on state, with a generous deadline.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

MODULE = '''\
"""A user's own wrapper module (resqmp tests)."""
{imports}
import json
import os
import socket
import time

from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper

VERSION = {version!r}
{extra}
DEADLINE = 300      # seconds a held task waits before it fails the test


def _worker():
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{{socket.gethostname()}}:{{os.getpid()}}"


def _workers_seen(log_dir):
    seen = set()
    for name in os.listdir(log_dir):
        if name.endswith(".json"):
            with open(os.path.join(log_dir, name)) as f:
                seen.add(json.load(f)["worker"])
    return len(seen)


def find_faces_ijk(index, parent_tmp_dir, log_dir, hold_file=None, wait_for_workers=1, **kwargs):
    os.makedirs(log_dir, exist_ok=True)
    record = {{"index": index, "version": VERSION, "file": __file__, "worker": _worker(),
               "cwd": os.getcwd(), "extra": EXTRA}}
    tmp = os.path.join(log_dir, f".task-{{index}}.{{os.getpid()}}")
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, os.path.join(log_dir, f"task-{{index}}.json"))
    deadline = time.monotonic() + DEADLINE
    while (hold_file and not os.path.exists(hold_file)) or _workers_seen(log_dir) < wait_for_workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"held for {{DEADLINE}} s: hold_file {{hold_file}}, "
                               f"{{_workers_seen(log_dir)}} of {{wait_for_workers}} workers seen")
        time.sleep(0.2)
    return find_faces_to_represent_surface_regular_wrapper(index, parent_tmp_dir, **kwargs)
'''


def module_source(version: str = "1", extra: str = "EXTRA = None", imports: str = "") -> str:
    """The wrapper module's text; `extra` must define EXTRA (recorded per task); `imports` first."""
    return MODULE.format(version=version, extra=extra, imports=imports)


def write_project(folder: Path, example: dict, wrapper: str = "my_wrappers:find_faces_ijk",
                  module: str | None | bool = None, batch_name: str = "batch.yaml", **defaults) -> Path:
    """folder/BATCH_NAME: the example's find-faces tasks through the user's wrapper, markers in
    folder/marks; and folder/my_wrappers.py: `module`, or module_source() (None), or none (False).
    Returns the batch."""
    folder.mkdir(parents=True, exist_ok=True)
    if module is not False:
        (folder / "my_wrappers.py").write_text(module_source() if module is None else module)
    data = yaml.safe_load(Path(example["batch"]).read_text())
    base = Path(example["batch"]).parent
    data["wrapper"] = wrapper
    for key, value in list(data["defaults"].items()):
        if key.endswith("_epc"):
            data["defaults"][key] = str(base / value)           # the model stays where it is
    data["defaults"].update({"log_dir": "marks", **defaults})
    batch = folder / batch_name
    batch.write_text(yaml.safe_dump(data, sort_keys=False))
    return batch


def markers(folder: Path) -> list[dict]:
    """One record per task the user's wrapper ran (the last run of each index)."""
    return [json.loads(p.read_text()) for p in sorted((folder / "marks").glob("task-*.json"))]


# A batch is data: the user's own wrappers run only when allowed (uploading them does not allow them).
ALLOW_USER_WRAPPERS = ("--allow-wrapper", "my_wrappers:*", "--allow-wrapper", "faces_pkg.core:*")
