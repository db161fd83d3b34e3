"""A task for the throughput and memory benchmarks: little CPU, a real (small) RESQML output.

`sleepy_point_set` waits `seconds`, then writes what a resqpy wrapper writes: its own
`parent_tmp_dir/<uuid>/wrapper.epc` + `.h5` holding a CRS (the same for every task, so
consolidation merges it) and a 4-point PointSet named after the task, and returns
`(index, success, epc_file, uuid_list)`. The launcher's per-task work (Dask round trip, journal,
progress, merge of two parts, one HDF5 array) is then what the benchmark measures.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np


def sleepy_point_set(index: int, parent_tmp_dir: str, name: str, seconds: float = 0.2):
    import resqpy.crs as rqc
    import resqpy.model as rq
    import resqpy.surface as rqs

    time.sleep(seconds)
    folder = Path(parent_tmp_dir) / str(uuid.uuid4())
    folder.mkdir(parents=True, exist_ok=True)
    epc = str(folder / "wrapper.epc")
    model = rq.new_model(epc, quiet=True)
    crs = rqc.Crs(model, title="bench crs")
    crs.create_xml()
    points = np.array([[0.0, 0.0, 1000.0], [100.0, 0.0, 1000.0], [0.0, 100.0, 1010.0], [100.0, 100.0, 1010.0]])
    points[:, 2] += index % 97
    pset = rqs.PointSet(model, points_array=points, crs_uuid=crs.uuid, title=name)
    pset.write_hdf5()
    pset.create_xml()
    model.store_epc(quiet=True)
    model.h5_release()
    return index, True, epc, [str(crs.uuid), str(pset.uuid)]
