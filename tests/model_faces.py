"""Grid connection set faces, as comparable values: from an output EPC, and from resqpy's own
find_faces_to_represent_surface on the original grid and surface."""
from __future__ import annotations

import numpy as np


def gcs_faces(gcs) -> list[tuple[int, ...]]:
    """Sorted (cell a, cell b, face a, face b) rows of a grid connection set."""
    gcs.cache_arrays()
    rows = np.concatenate((gcs.cell_index_pairs, gcs.face_index_pairs), axis=1)
    return sorted(map(tuple, rows.tolist()))


def output_faces(epc, title: str) -> list[tuple[int, ...]]:
    """The faces of the one grid connection set titled title in epc."""
    import resqpy.fault as rqf
    import resqpy.model as rq
    model = rq.Model(str(epc), quiet=True)
    uuids = model.uuids(obj_type="GridConnectionSetRepresentation", title=title, title_case_sensitive=True)
    assert len(uuids) == 1, f"{len(uuids)} grid connection sets titled {title!r} in {epc}"
    faces = gcs_faces(rqf.GridConnectionSet(model, uuid=uuids[0]))
    model.h5_release()
    return faces


def resqpy_faces(grid_epc, grid_uuid, surface_epc, surface_uuid) -> list[tuple[int, ...]]:
    """What resqpy's general find_faces_to_represent_surface (mode 'auto') finds, in-process."""
    import resqpy.grid as grr
    import resqpy.grid_surface as rqgs
    import resqpy.model as rq
    import resqpy.surface as rqs
    grid = grr.any_grid(rq.Model(str(grid_epc), quiet=True), uuid=grid_uuid)
    surface = rqs.Surface(rq.Model(str(surface_epc), quiet=True), uuid=surface_uuid)
    gcs = rqgs.find_faces_to_represent_surface(grid, surface, "reference", mode="auto")
    assert gcs is not None and gcs.count > 0
    return gcs_faces(gcs)
