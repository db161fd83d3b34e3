"""Small synthetic RESQML model exercising the three resqpy multiprocessing wrappers.

``write_example(out_dir)`` writes ``model.epc`` (+ ``model.h5``) holding a regular grid with
DX/DY/DZ properties, a few fault surfaces crossing it, a few well trajectories running through it
and some column properties on it; plus three batch files (``batch.yaml`` for find-faces,
``batch-mesh.yaml`` for meshes from column properties, ``batch-wells.yaml`` for blocked wells)
whose paths are relative to ``out_dir``.

The geometry is deterministic (no randomness) and small enough that building it takes well under a
second and each find-faces task is quick once numba is warm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import yaml

__all__ = ["write_example"]

#: cell size (dx, dy, dz) in metres
DXYZ = (100.0, 100.0, 10.0)
#: depth of the top of the grid (z increases downward)
GRID_TOP = 2000.0


def _lattice_triangles(nu: int, nv: int) -> np.ndarray:
    """Triangles (two per lattice cell) over a (nu, nv) lattice of points numbered u-major."""
    tris = []
    for a in range(nu - 1):
        for b in range(nv - 1):
            p00 = a * nv + b
            p01 = p00 + 1
            p10 = p00 + nv
            p11 = p10 + 1
            tris.append((p00, p01, p11))
            tris.append((p00, p11, p10))
    return np.array(tris, dtype=np.int32)


def _fault_points(i: int, n: int, extent_kji: Sequence[int]) -> np.ndarray:
    """Points of fault ``i`` of ``n``: a dipping, slightly oblique plane over a (y, z) lattice.

    Fault ``i`` sits at a different x position, has its own dip and strike, and covers a
    different length along y (longer for higher ``i``) so its face count differs from the others.
    """
    nk, nj, ni = extent_kji
    dx, dy, dz = DXYZ
    x_len, y_len, z_len = ni * dx, nj * dy, nk * dz
    frac = (i + 1) / (n + 1)
    x0 = x_len * (0.1 + 0.8 * frac) + 0.137 * dx  # offset avoids sitting exactly on cell centres
    # lateral extent along y: from beyond the grid's y=0 side to a fault-specific distance
    y_start = -0.25 * y_len
    y_end = y_len * (0.35 + 0.6 * frac) + 0.291 * dy
    z_top, z_bottom = GRID_TOP - 0.5 * z_len, GRID_TOP + 1.5 * z_len
    strike_slope = 0.04 * ((i % 3) - 1)  # dx/dy: -0.04, 0.0, +0.04
    dip_slope = 0.8 * (1.0 + 0.5 * (i % 2)) * (1 if i % 2 else -1)  # dx/dz: a steep normal fault
    ys = np.linspace(y_start, y_end, 6)
    zs = np.linspace(z_top, z_bottom, 4)
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    xx = x0 + strike_slope * (yy - 0.5 * y_len) + dip_slope * (zz - (GRID_TOP + 0.5 * z_len))
    return np.stack((xx, yy, zz), axis=-1).reshape(-1, 3), (len(ys), len(zs))


def _outside_points(extent_kji: Sequence[int]) -> np.ndarray:
    """Points of a small vertical surface lying entirely east of the grid."""
    nk, nj, ni = extent_kji
    dx, dy, dz = DXYZ
    x_len, y_len, z_len = ni * dx, nj * dy, nk * dz
    ys = np.linspace(0.2 * y_len, 0.8 * y_len, 4)
    zs = np.linspace(GRID_TOP, GRID_TOP + z_len, 3)
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    xx = np.full_like(yy, 1.5 * x_len + 0.37 * dx)
    return np.stack((xx, yy, zz), axis=-1).reshape(-1, 3), (len(ys), len(zs))


def _well_control_points(w: int, n: int, extent_kji: Sequence[int]):
    """Measured depths and control points for well ``w`` of ``n``.

    Each well starts at the surface (z = 0, well above the grid top), drops vertically to just above
    the grid, then deviates through the grid and exits below its base.
    """
    nk, nj, ni = extent_kji
    dx, dy, dz = DXYZ
    x_len, y_len, z_len = ni * dx, nj * dy, nk * dz
    frac = (w + 1) / (n + 1)
    x_head = x_len * (0.15 + 0.7 * frac) + 0.23 * dx
    y_head = y_len * (0.8 - 0.6 * frac) + 0.41 * dy
    # horizontal drift while crossing the grid, different direction for each well
    angle = 2.0 * np.pi * frac
    drift = 4.0 * dx
    kick_off = GRID_TOP - 0.5 * z_len
    bottom = GRID_TOP + 1.3 * z_len
    pts = np.array([
        (x_head, y_head, 0.0),
        (x_head, y_head, kick_off),
        (x_head + 0.5 * drift * np.cos(angle), y_head + 0.5 * drift * np.sin(angle), GRID_TOP + 0.5 * z_len),
        (x_head + drift * np.cos(angle), y_head + drift * np.sin(angle), bottom),
    ])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    mds = np.concatenate(([0.0], np.cumsum(seg)))
    return mds, pts


def _column_property_array(p: int, extent_kji: Sequence[int]) -> np.ndarray:
    """A smooth, property-specific (nj, ni) map."""
    nk, nj, ni = extent_kji
    j = np.arange(nj, dtype=float)[:, None]
    i = np.arange(ni, dtype=float)[None, :]
    wave = np.sin((p + 1) * np.pi * i / max(ni, 1)) * np.cos((p + 1) * np.pi * j / max(nj, 1))
    return GRID_TOP + 5.0 * p + 3.0 * wave + 0.01 * (i + j)


def _dump_batch(path: Path, header: str, doc: dict) -> None:
    text = "".join(f"# {line}\n" for line in header.strip().splitlines())
    text += yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
    path.write_text(text)


def write_example(out_dir,
                  surfaces: int = 4,
                  wells: int = 3,
                  mesh_properties: int = 2,
                  extent_kji=(20, 50, 50),
                  outside_surface: bool = False) -> Dict[str, object]:
    """Write a small synthetic model plus three batch files into ``out_dir``.

    arguments:
        out_dir (Path or str): folder to write into; created if missing
        surfaces (int): number of fault surfaces ("fault 1", "fault 2", ...) crossing the grid
        wells (int): number of well trajectories ("well 1", ...) running through the grid
        mesh_properties (int): number of column properties ("map 1", ...) on the grid
        extent_kji (triple int): grid extent (nk, nj, ni); cells are 100 x 100 x 10 m
        outside_surface (bool): if True, an extra surface titled "outside" that misses the grid
            entirely is added (and listed as the last find-faces task); find-faces raises for it

    returns:
        dict with keys "epc", "batch", "batch_mesh", "batch_wells" (Paths), "grid_uuid" (str),
        "surface_uuids", "trajectory_uuids", "property_uuids" (lists of str); surface_uuids
        includes the outside surface last when outside_surface is True
    """
    import resqpy.crs as rqc
    import resqpy.grid as grr
    import resqpy.model as rq
    import resqpy.property as rqp
    import resqpy.surface as rqs
    import resqpy.well as rqw

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extent_kji = tuple(int(n) for n in extent_kji)
    assert len(extent_kji) == 3 and min(extent_kji) > 0
    epc = out_dir / "model.epc"
    for stale in (epc, epc.with_suffix(".h5")):
        if stale.exists():
            stale.unlink()

    model = rq.new_model(str(epc), quiet=True)

    crs = rqc.Crs(model, xy_units="m", z_units="m", z_inc_down=True, title="local depth crs")
    crs.create_xml()

    grid = grr.RegularGrid(model,
                           extent_kji=extent_kji,
                           dxyz=DXYZ,
                           origin=(0.0, 0.0, GRID_TOP),
                           crs_uuid=crs.uuid,
                           title="example grid",
                           set_points_cached=False)
    grid.create_xml(add_cell_length_properties=True)

    # fault surfaces
    surface_uuids: List[str] = []
    surface_names: List[str] = []
    for s in range(surfaces):
        points, (nu, nv) = _fault_points(s, surfaces, extent_kji)
        surf = rqs.Surface(model, crs_uuid=crs.uuid, title=f"fault {s + 1}")
        surf.set_from_triangles_and_points(_lattice_triangles(nu, nv), points)
        surf.write_hdf5()
        surf.create_xml()
        surface_uuids.append(str(surf.uuid))
        surface_names.append(f"fault {s + 1}")
    if outside_surface:
        points, (nu, nv) = _outside_points(extent_kji)
        surf = rqs.Surface(model, crs_uuid=crs.uuid, title="outside")
        surf.set_from_triangles_and_points(_lattice_triangles(nu, nv), points)
        surf.write_hdf5()
        surf.create_xml()
        surface_uuids.append(str(surf.uuid))
        surface_names.append("outside")

    # well trajectories
    trajectory_uuids: List[str] = []
    trajectory_names: List[str] = []
    for w in range(wells):
        name = f"well {w + 1}"
        mds, pts = _well_control_points(w, wells, extent_kji)
        datum = rqw.MdDatum(model, crs_uuid=crs.uuid, location=tuple(pts[0]), md_reference="kelly bushing",
                            title=f"{name} datum")
        datum.create_xml()
        traj = rqw.Trajectory(model,
                              md_datum=datum,
                              mds=mds,
                              control_points=pts,
                              length_uom="m",
                              well_name=name)
        traj.write_hdf5()
        traj.create_xml()
        trajectory_uuids.append(str(traj.uuid))
        trajectory_names.append(name)

    # column properties (one value per column)
    property_uuids: List[str] = []
    property_names: List[str] = []
    for p in range(mesh_properties):
        name = f"map {p + 1}"
        prop = rqp.Property.from_array(model,
                                       _column_property_array(p, extent_kji),
                                       source_info="resqmp synthetic example",
                                       keyword=name,
                                       support_uuid=grid.uuid,
                                       property_kind="depth",
                                       indexable_element="columns",
                                       uom="m")
        property_uuids.append(str(prop.uuid))
        property_names.append(name)

    model.store_epc(quiet=True)
    model.h5_release()

    grid_uuid = str(grid.uuid)
    batch = out_dir / "batch.yaml"
    _dump_batch(
        batch, "resqmp example batch: find faces (grid connection sets) for each fault surface\n"
        "paths are relative to this file's folder", {
            "wrapper": "find_faces_to_represent_surface_regular",
            "defaults": {
                "grid_epc": "model.epc",
                "grid_uuid": grid_uuid,
                "surface_epc": "model.epc",
                "use_index_as_realisation": False,
                "n_threads": 1,
            },
            "tasks": [{
                "surface_uuid": u,
                "name": n
            } for u, n in zip(surface_uuids, surface_names)],
        })
    batch_mesh = out_dir / "batch-mesh.yaml"
    _dump_batch(
        batch_mesh, "resqmp example batch: a Grid2dRepresentation (mesh) from each grid column property\n"
        "paths are relative to this file's folder", {
            "wrapper": "mesh_from_regular_grid_column_property",
            "defaults": {
                "grid_epc": "model.epc",
                "grid_uuid": grid_uuid,
            },
            "tasks": [{
                "prop_uuids": [u],
                "name": n
            } for u, n in zip(property_uuids, property_names)],
        })
    batch_wells = out_dir / "batch-wells.yaml"
    _dump_batch(
        batch_wells, "resqmp example batch: a blocked well in the grid from each well trajectory\n"
        "paths are relative to this file's folder", {
            "wrapper": "blocked_well_from_trajectory",
            "defaults": {
                "grid_epc": "model.epc",
                "grid_uuid": grid_uuid,
                "trajectory_epc": "model.epc",
            },
            "tasks": [{
                "trajectory_uuids": [u],
                "name": n
            } for u, n in zip(trajectory_uuids, trajectory_names)],
        })

    return {
        "epc": epc,
        "batch": batch,
        "batch_mesh": batch_mesh,
        "batch_wells": batch_wells,
        "grid_uuid": grid_uuid,
        "surface_uuids": surface_uuids,
        "trajectory_uuids": trajectory_uuids,
        "property_uuids": property_uuids,
    }
