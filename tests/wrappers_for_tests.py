"""Wrappers with resqpy's return contract, for tests only (imported on workers via PYTHONPATH)."""
from __future__ import annotations

import json
import os
import time


def numba_threads_wrapper(index, parent_tmp_dir, record_file, name=None):
    """Records what numba sees inside the worker, after resqpy (and so numba) is imported."""
    import resqpy.grid_surface  # noqa: F401 - imports numba the way the real wrappers do
    import numba
    import threadpoolctl
    blas = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    with open(record_file, "w") as f:
        json.dump({"config": numba.config.NUMBA_NUM_THREADS, "get_num_threads": numba.get_num_threads(),
                   "blas_threads": blas,
                   "env": os.environ.get("NUMBA_NUM_THREADS"), "pid": os.getpid(),
                   "cache": os.environ.get("RESQPY_NUMBA_CACHE"),
                   "hdf5_locking": os.environ.get("HDF5_USE_FILE_LOCKING")}, f)
    return index, True, None, []


def churn_faults(rounds: int = 40, size: int = 1 << 20) -> int:
    """Minor page faults while allocating, touching and freeing a `size`-byte array `rounds` times:
    a few hundred per round where each free returns the array to the kernel (glibc's malloc with
    a fixed trim threshold, as Dask's nannies set it), ~none where the heap keeps it for the next."""
    import resource
    import numpy as np
    np.ones(size, dtype=np.uint8)                 # let the heap grow once before counting
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        a = np.ones(size, dtype=np.uint8)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def malloc_wrapper(index, parent_tmp_dir, record_file, name=None):
    """Records the page faults a task's large temporary arrays cost inside the worker."""
    with open(record_file, "w") as f:
        json.dump({"faults": churn_faults(), "trim_env": os.environ.get("MALLOC_TRIM_THRESHOLD_")}, f)
    return index, True, None, []


def sleepy_wrapper(index, parent_tmp_dir, seconds: float = 1.0, name=None, fail: bool = False):
    time.sleep(seconds)
    if fail:
        raise RuntimeError(f"task {index} asked to fail")
    return index, True, None, []


def log_call(log_dir, index) -> bool:
    """Leave a file `INDEX.PID.NS` in log_dir (which task ran, where, how often); True on the
    task's first call."""
    first = not any(n.split(".")[0] == str(index) for n in os.listdir(log_dir))
    open(os.path.join(log_dir, f"{index}.{os.getpid()}.{time.monotonic_ns()}"), "w").close()
    return first


def wait_for_workers(log_dir, workers: int, timeout: float = 120.0) -> None:
    """Wait until calls from `workers` distinct worker processes are in log_dir (log_call's PIDs):
    a test that needs that many workers to take tasks then does not depend on how soon each one
    starts. Every call gives up `timeout` after the batch's first call (log_call's monotonic
    clock, one machine), and the test then fails on what it asserts instead of hanging."""
    while True:
        calls = [n.split(".") for n in os.listdir(log_dir)]
        if len({pid for _, pid, _ in calls}) >= workers:
            return
        if time.monotonic_ns() > min(int(ns) for _, _, ns in calls) + timeout * 1e9:
            return
        time.sleep(0.2)


def logged_wrapper(index, parent_tmp_dir, log_dir, seconds: float = 0.05, fail: bool = False,
                   fail_once: bool = False, workers: int = 0, name=None):
    """sleepy_wrapper that logs each call (log_call); fail_once raises on the task's first call only;
    `workers`: first wait until that many workers have taken a task (wait_for_workers)."""
    first = log_call(log_dir, index)
    wait_for_workers(log_dir, workers)
    time.sleep(seconds)
    if fail or (fail_once and first):
        raise RuntimeError(f"task {index} asked to fail")
    return index, True, None, []


def slow_find_faces(index, parent_tmp_dir, delay: float = 0.5, log_dir=None, workers: int = 0, **kwargs):
    """resqpy's find-faces wrapper, then a pause: keeps a batch running long enough to kill things.
    With log_dir, each call is logged first (log_call), then waits for `workers` workers
    (wait_for_workers)."""
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as find_faces
    if log_dir:
        log_call(log_dir, index)
        wait_for_workers(log_dir, workers)
    result = find_faces(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)
    time.sleep(delay)
    return result


def flaky_wrapper(index, parent_tmp_dir, marker_file, name=None):
    """Raises on its first call, succeeds afterwards (state in marker_file)."""
    if not os.path.exists(marker_file):
        with open(marker_file, "w") as f:
            f.write("failed once")
        raise RuntimeError("transient failure")
    return index, True, None, []


def gated_find_faces(index, parent_tmp_dir, gate_file=None, **kwargs):
    """resqpy's find-faces wrapper, run once gate_file exists (at most 10 min): holds a batch
    open for as long as a test needs the running cluster (None: no gate)."""
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as find_faces
    deadline = time.monotonic() + 600
    while gate_file and not os.path.exists(gate_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    return find_faces(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)


class StubbornError(Exception):
    """Pickles on the worker but cannot be rebuilt from its pickle (two required arguments)."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")


def raising_wrapper(index, parent_tmp_dir, kind="value", name=None):
    """Raises by kind: value (ValueError), stubborn (StubbornError), unpicklable (an error holding
    a lock); 'none' returns success False without raising."""
    import threading
    if kind == "value":
        raise ValueError(f"task {index} has a bad value")
    if kind == "stubborn":
        raise StubbornError(7, "cannot be unpickled")
    if kind == "unpicklable":
        error = RuntimeError("holds a lock")
        error.lock = threading.Lock()
        raise error
    if kind == "none":
        return index, False, None, []
    return index, True, None, []


def env_wrapper(index, parent_tmp_dir, record_file, names, name=None):
    """Records the worker's values of `names` (null when unset) and its HOME."""
    with open(record_file, "w") as f:
        json.dump({"env": {n: os.environ.get(n) for n in names}, "HOME": os.path.expanduser("~"),
                   "pid": os.getpid()}, f)
    return index, True, None, []


def monitor_interval_wrapper(index, parent_tmp_dir, record_file, name=None):
    """Records how often distributed's system monitor samples, and its tick, in this worker and its
    scheduler (ms)."""
    from distributed import get_client, get_worker

    def intervals(server):
        return [server.periodic_callbacks[name].callback_time for name in ("monitor", "tick")]

    def scheduler_intervals(dask_scheduler=None):
        return intervals(dask_scheduler)

    with open(record_file, "w") as f:
        json.dump({"worker": intervals(get_worker()), "scheduler": get_client().run_on_scheduler(scheduler_intervals)}, f)
    return index, True, None, []


def dying_find_faces(index, parent_tmp_dir, die_on: int = -1, marker_dir=None, **kwargs):
    """resqpy's find-faces wrapper; the first call of task `die_on` kills its own worker process
    instead (marker_dir/died remembers it), so that Dask sends the task's group again."""
    import signal
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as find_faces
    if index == die_on and marker_dir:
        marker = os.path.join(marker_dir, "died")
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    return find_faces(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)


def crs_first_surface(index, parent_tmp_dir, name="fault A"):
    """A task model written in this part order: a new CRS (a fresh uuid, the same units each
    time), a fault feature and interpretation titled `name`, a small surface referring to both.
    resqpy's consolidation order puts features and interpretations before CRSs: a model whose own
    part order differs from it (relationships are added in the task model's order)."""
    import uuid as uuid_mod

    import numpy as np
    import resqpy.crs as rqc
    import resqpy.model as rq
    import resqpy.surface as rqs
    folder = os.path.join(parent_tmp_dir, f"task-{index}-{uuid_mod.uuid4().hex[:8]}")
    os.makedirs(folder)
    epc = os.path.join(folder, "task.epc")
    model = rq.new_model(epc, quiet=True)
    crs = rqc.Crs(model)
    crs.create_xml()
    surface = rqs.Surface(model, crs_uuid=crs.uuid, title=name)
    surface.set_from_triangles_and_points(np.array([[0, 1, 2], [1, 3, 2]], dtype=int),
                                          np.array([[0, 0, index], [1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=float))
    surface.create_interpretation_and_feature(kind="fault", name=name)
    surface.write_hdf5()
    surface.create_xml()
    model.store_epc(quiet=True)
    model.h5_release()
    return index, True, epc, [str(surface.uuid)]


def log_output(log_file, index: int, epc: str, uuid_list: list) -> None:
    """Append a task's output as its wrapper returned it (index, epc_file, uuid_list), one JSON line:
    what resqpy's recombination is given for the reference (logged_outputs)."""
    with open(log_file, "a") as f:
        f.write(json.dumps({"index": index, "epc_file": epc, "uuid_list": uuid_list}) + "\n")


def logged_outputs(log_file) -> list[dict]:
    """log_output's records in task order, the last call of each task."""
    last = {}
    with open(log_file) as f:
        for line in f.read().splitlines():
            record = json.loads(line)
            last[record["index"]] = record
    return [last[i] for i in sorted(last)]


def damage_h5(h5, how: str) -> None:
    """Damage a task's HDF5 file as a disk, a copy or a filesystem could: `truncated` (cut short
    at 3000 bytes, as `truncate -s 3000`), `gone`, `not_hdf5`, or `dataset_missing` (the last
    dataset h5py's visit finds, one of the task's own arrays, deleted)."""
    if how == "truncated":
        os.truncate(h5, min(3000, os.path.getsize(h5) // 2))
    elif how == "gone":
        os.unlink(h5)
    elif how == "not_hdf5":
        with open(h5, "wb") as f:
            f.write(b"not an HDF5 file")
    elif how == "dataset_missing":
        import h5py
        with h5py.File(h5, "a") as f:
            found = []
            f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
            del f[found[-1]]
    else:
        raise ValueError(how)


def h5_damaged_find_faces(index, parent_tmp_dir, damage_index: int = -1, how: str = "truncated", **kwargs):
    """resqpy's find-faces wrapper; task `damage_index` then damages the HDF5 file its EPC names
    (damage_h5) before it returns: its EPC is whole, its arrays are not."""
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as find_faces
    result = find_faces(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)
    if index == damage_index:
        damage_h5(os.path.splitext(result[2])[0] + ".h5", how)
    return result


#: what bad_uuid_find_faces adds to its uuid_list: a well-formed uuid of no part of its EPC (a
#: stale one), a string that is not a uuid, something that is not a string
BOGUS_UUIDS = {"absent": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "not_a_uuid": "not-a-uuid",
               "not_a_string": 12345}


def bad_uuid_find_faces(index, parent_tmp_dir, bad_index: int = -1, bogus: str = "absent", **kwargs):
    """resqpy's find-faces wrapper (a real small part written); task `bad_index` then returns a
    uuid_list with one entry more, BOGUS_UUIDS[bogus], that names no part of its EPC, as a buggy
    user wrapper could (put second, between uuids that are there)."""
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as find_faces
    index, success, epc, uuids = find_faces(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)
    if index == bad_index:
        uuids = list(uuids[:1]) + [BOGUS_UUIDS[bogus]] + list(uuids[1:])
    return index, success, epc, uuids


#: uuid_lists resqpy's recombination cannot iterate as uuids: None (TypeError in sort_uuids_list),
#: the part's uuid as one string (its characters taken as uuids: ValueError), a number
MALFORMED_UUID_LISTS = {"none": lambda uuids: None, "one_string": lambda uuids: str(uuids[0]),
                        "bytes": lambda uuids: str(uuids[0]).encode(), "number": lambda uuids: 7}


def malformed_uuid_list_find_faces(index, parent_tmp_dir, bad_index: int = -1, shape: str = "none", **kwargs):
    """resqpy's find-faces wrapper; task `bad_index` reports success with its EPC written but a
    uuid_list of MALFORMED_UUID_LISTS[shape] instead of a list of uuids, as a buggy user wrapper
    could."""
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as find_faces
    index, success, epc, uuids = find_faces(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)
    if index == bad_index:
        uuids = MALFORMED_UUID_LISTS[shape](uuids)
    return index, success, epc, uuids


def working_set_wrapper(index, parent_tmp_dir, arrays: int = 40, mb: int = 4, keep: bool = False,
                        seconds: float = 0.0, name=None):
    """A task whose `arrays` arrays of `mb` MB are alive together, then all freed; keep: a 200 KB
    buffer allocated after them outlives the task (as a cache would), so that what they occupied
    is free space below it in the heap, not its top. seconds: runs on that long after freeing."""
    import numpy as np
    live = [np.ones(mb << 20, dtype=np.uint8) for _ in range(arrays)]
    if keep:
        _KEPT.append(np.ones(200 << 10, dtype=np.uint8))
    del live
    time.sleep(seconds)
    return index, True, None, []


_KEPT: list = []


def maps_by_itself(nbytes: int) -> bool:
    """Whether glibc's malloc maps an allocation of `nbytes` on its own (its mmap threshold is
    below it), read from glibc's own count of mapped chunks (mallinfo2)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                    "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    before = libc.mallinfo2().hblks
    chunk = libc.malloc(nbytes)
    mapped = libc.mallinfo2().hblks > before
    libc.free(chunk)
    return mapped


def marked_find_faces(index, parent_tmp_dir, marker_dir, delay: float = 0.0, **kwargs):
    """resqpy's find-faces wrapper, steered per task by files in marker_dir (the batch's kwargs, and
    so its digest, stay the same from run to run): `fail-INDEX` -> raises; `hold-INDEX` -> waits
    until that file is gone (at most 10 min) before running; `damage-INDEX` -> its HDF5 file cut
    short (damage_h5 "truncated") after it ran. Then a pause of `delay` seconds. Each call that
    returns first appends its output (index, epc_file, uuid_list) to marker_dir/calls.jsonl."""
    from resqpy.multi_processing import find_faces_to_represent_surface_regular_wrapper as find_faces
    marker = os.path.join(marker_dir, "{}-%d" % index)
    if os.path.exists(marker.format("fail")):
        raise RuntimeError(f"task {index} failed ({marker.format('fail')} exists)")
    deadline = time.monotonic() + 600
    while os.path.exists(marker.format("hold")) and time.monotonic() < deadline:
        time.sleep(0.1)
    result = find_faces(index=index, parent_tmp_dir=parent_tmp_dir, **kwargs)
    if os.path.exists(marker.format("damage")):
        damage_h5(os.path.splitext(result[2])[0] + ".h5", "truncated")
    line = json.dumps({"index": index, "epc_file": str(result[2]), "uuid_list": [str(u) for u in result[3]]})
    with open(os.path.join(marker_dir, "calls.jsonl"), "a") as f:
        f.write(line + "\n")
    time.sleep(delay)
    return result


def scripted_wrapper(index, parent_tmp_dir, log_dir, calls, name=None):
    """The task's n-th call (counted in log_dir, see log_call; from 0) sleeps calls[n] seconds, the
    last entry for any later call; a negative entry sleeps that long, then kills its own worker
    process (SIGKILL), so that Dask sends the task's group again."""
    import signal
    n = sum(1 for f in os.listdir(log_dir) if f.split(".")[0] == str(index))
    log_call(log_dir, index)
    seconds = calls[min(n, len(calls) - 1)]
    time.sleep(abs(seconds))
    if seconds < 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return index, True, None, []
