"""Benchmark dataset: N fault surfaces crossing a 20x50x50 regular grid, for find-faces.

Built from resqmp.example.write_example, then split so that the per-task cost does not grow with
N: the grid (with its CRS and DX/DY/DZ) in grid.epc, each surface in its own surfaces/sNNNNN.epc.
(With write_example's single model.epc, every task opens an EPC holding all N surfaces, so task
compute itself grows linearly with N and hides what the benchmark is about: recombination.)
`layout="single"` keeps write_example's one-file layout.

The dataset is cached per (N, layout) under the given root and reused.
"""
from __future__ import annotations

import json
import time
from pathlib import Path


def build(root: str | Path, n: int, layout: str = "split") -> dict:
    """Return {"grid_epc", "grid_uuid", "tasks": [kwargs per task], "build_seconds"}; cached."""
    assert layout in ("split", "single")
    root = Path(root) / f"data-{layout}-{n}"
    meta_file = root / "dataset.json"
    if meta_file.is_file():
        return json.loads(meta_file.read_text())
    start = time.perf_counter()
    import resqpy.model as rq
    from resqmp.example import write_example

    full = write_example(root / "full", surfaces=n, wells=1, mesh_properties=1)
    common = {"use_index_as_realisation": False, "n_threads": 1}
    if layout == "single":
        tasks = [{"grid_epc": str(full["epc"]), "grid_uuid": full["grid_uuid"], "surface_epc": str(full["epc"]),
                  "surface_uuid": u, "name": f"fault {i + 1}", **common}
                 for i, u in enumerate(full["surface_uuids"])]
        grid_epc = str(full["epc"])
    else:
        source = rq.Model(str(full["epc"]), quiet=True)
        grid_epc = str(root / "grid.epc")
        grid_model = rq.new_model(grid_epc, quiet=True)
        grid_model.copy_uuid_from_other_model(source, full["grid_uuid"])
        for title in ("DX", "DY", "DZ"):
            grid_model.copy_uuid_from_other_model(
                source, source.uuid(obj_type="ContinuousProperty", title=title, related_uuid=full["grid_uuid"]))
        grid_model.store_epc(quiet=True)
        grid_model.h5_release()
        (root / "surfaces").mkdir(exist_ok=True)
        tasks = []
        for i, u in enumerate(full["surface_uuids"]):
            epc = str(root / "surfaces" / f"s{i:05d}.epc")
            m = rq.new_model(epc, quiet=True)
            m.copy_uuid_from_other_model(source, u)
            m.store_epc(quiet=True)
            m.h5_release()
            tasks.append({"grid_epc": grid_epc, "grid_uuid": full["grid_uuid"], "surface_epc": epc,
                          "surface_uuid": u, "name": f"fault {i + 1}", **common})
        source.h5_release()
    meta = {"n": n, "layout": layout, "grid_epc": grid_epc, "grid_uuid": full["grid_uuid"], "tasks": tasks,
            "build_seconds": round(time.perf_counter() - start, 2)}
    meta_file.write_text(json.dumps(meta))
    return meta
