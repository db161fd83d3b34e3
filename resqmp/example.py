"""Small synthetic RESQML model exercising the three resqpy multiprocessing wrappers.

``write_example(out_dir)`` writes ``model.epc`` (+ ``model.h5``) holding a regular grid with
DX/DY/DZ properties, a few fault surfaces crossing it, a few well trajectories running through it
and some column properties on it; plus three batch files (``batch.yaml`` for find-faces,
``batch-mesh.yaml`` for meshes from column properties, ``batch-wells.yaml`` for blocked wells)
whose paths are relative to ``out_dir``.

Every task carries a ``name``. Only the find-faces wrapper takes ``name`` as an argument (the
feature name of the grid connection set); for the mesh and blocked-well wrappers, which have no
``name`` parameter, it is just a task label that must not be passed to the wrapper.

Notes on what resqpy needs here: find-faces requires an aligned regular grid whose origin is at the
local CRS origin (0, 0, 0) (otherwise it silently finds no faces and the wrapper raises), and the
grid's DX/DY/DZ properties; surfaces of up to 100 triangles are used untrimmed; blocked wells need
trajectories that start above the grid top (z increases downward); meshes need a column property
(indexable element 'columns', shape (nj, ni)).

The geometry is deterministic (no randomness) and small enough that building it takes well under a
second and each find-faces task is quick once numba is warm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from resqmp import datafile

from resqmp.errors import OutputError

__all__ = ["write_example"]

#: what write_example writes into its folder
EXAMPLE_FILES = ("model.epc", "model.h5", "batch.yaml", "batch-mesh.yaml", "batch-wells.yaml")
#: lists the files an example wrote, so a later example may replace them (and nothing else)
MARKER = ".resqmp-example"

#: cell size (dx, dy, dz) in metres
DXYZ = (100.0, 100.0, 10.0)
#: offsets of the local CRS origin (the grid's first corner) in the projected / depth system
CRS_OFFSETS = (450000.0, 6200000.0, 2000.0)
#: local z of the grid top: find-faces requires the grid origin at the local CRS origin
GRID_TOP = 0.0
#: local z of the wells' measured depth datum (global depth 0, i.e. well above the grid top)
DATUM_Z = -CRS_OFFSETS[2]


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


def _fault_points(i: int, n: int, extent_kji: Sequence[int]) -> Tuple[np.ndarray, Tuple[int, int]]:
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
    # strike and dip alternate in direction; their magnitudes, like the length, grow with i so that
    # the face count grows with i too
    sign = 1.0 if i % 2 else -1.0
    strike_slope = sign * 0.06 * frac  # dx/dy
    dip_slope = -sign * (0.5 + 0.5 * frac)  # dx/dz: dips of roughly 45 to 65 degrees
    ys = np.linspace(y_start, y_end, 6)
    zs = np.linspace(z_top, z_bottom, 4)
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    xx = x0 + strike_slope * (yy - 0.5 * y_len) + dip_slope * (zz - (GRID_TOP + 0.5 * z_len))
    return np.stack((xx, yy, zz), axis=-1).reshape(-1, 3), (len(ys), len(zs))


def _outside_points(extent_kji: Sequence[int]) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Points of a small vertical surface lying entirely east of the grid."""
    nk, nj, ni = extent_kji
    dx, dy, dz = DXYZ
    x_len, y_len, z_len = ni * dx, nj * dy, nk * dz
    ys = np.linspace(0.2 * y_len, 0.8 * y_len, 4)
    zs = np.linspace(GRID_TOP, GRID_TOP + z_len, 3)
    yy, zz = np.meshgrid(ys, zs, indexing="ij")
    xx = np.full_like(yy, 1.5 * x_len + 0.37 * dx)
    return np.stack((xx, yy, zz), axis=-1).reshape(-1, 3), (len(ys), len(zs))


def _well_control_points(w: int, n: int, extent_kji: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Measured depths and control points for well ``w`` of ``n``.

    Each well starts at its datum at global depth 0 (local z = DATUM_Z, far above the grid top; z increases
    downward), drops vertically to just above the grid, then deviates through the grid and exits below its base.
    """
    nk, nj, ni = extent_kji
    dx, dy, dz = DXYZ
    x_len, y_len, z_len = ni * dx, nj * dy, nk * dz
    frac = (w + 1) / (n + 1)
    x_head = x_len * (0.15 + 0.7 * frac) + 0.23 * dx
    y_head = y_len * (0.8 - 0.6 * frac) + 0.41 * dy
    # horizontal drift while crossing the grid, different direction for each well
    angle = 2.0 * np.pi * frac
    drift = 0.08 * min(x_len, y_len)
    kick_off = GRID_TOP - 0.5 * z_len
    bottom = GRID_TOP + 1.3 * z_len
    pts = np.array([
        (x_head, y_head, DATUM_Z),
        (x_head, y_head, kick_off),
        (x_head + 0.5 * drift * np.cos(angle), y_head + 0.5 * drift * np.sin(angle), GRID_TOP + 0.5 * z_len),
        (x_head + drift * np.cos(angle), y_head + drift * np.sin(angle), bottom),
    ])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    mds = np.concatenate(([0.0], np.cumsum(seg)))
    return mds, pts


def _column_property_array(p: int, extent_kji: Sequence[int]) -> np.ndarray:
    """A smooth, property-specific (nj, ni) map: local-CRS depths of a horizon inside the grid."""
    nk, nj, ni = extent_kji
    z_len = nk * DXYZ[2]
    j = np.arange(nj, dtype=float)[:, None]
    i = np.arange(ni, dtype=float)[None, :]
    wave = np.sin((p + 1) * np.pi * i / ni) * np.cos((p + 1) * np.pi * j / nj)
    mid = GRID_TOP + z_len * (0.5 - 0.25 / (p + 1))
    return mid + 0.2 * z_len * wave + 0.001 * z_len * (i - j)


def _flow(mapping: dict) -> str:
    """One-line YAML flow mapping; values are emitted as JSON, which is valid YAML (uuids stay quoted)."""
    return "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in mapping.items()) + "}"


def _write_batch(path: Path, header: str, wrapper: str, defaults: dict, tasks: List[dict]) -> None:
    lines = [f"# {line}" for line in header.strip().splitlines()]
    lines += [f"wrapper: {wrapper}", f"defaults: {_flow(defaults)}"]
    lines += (["tasks:"] + [f"  - {_flow(task)}" for task in tasks]) if tasks else ["tasks: []"]
    text = "\n".join(lines) + "\n"
    doc = datafile.loads_yaml(text)  # guard: launch must read back the data it was written from
    assert doc == {"wrapper": wrapper, "defaults": defaults, "tasks": tasks}, path
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
    out_dir = Path(out_dir)
    extent_kji = tuple(int(n) for n in extent_kji)
    assert len(extent_kji) == 3 and min(extent_kji) > 0
    _prepare_folder(out_dir)
    try:
        return _write(out_dir, surfaces, wells, mesh_properties, extent_kji, outside_surface)
    except OSError as e:
        raise OutputError(f"example folder {out_dir}: cannot write there ({e.strerror or e})") from None


def _prepare_folder(out_dir: Path) -> None:
    """The folder exists and is writable, and holds none of the example's file names unless an
    earlier example wrote them (its marker lists them): an example never replaces a user's files."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"example folder {out_dir}: cannot create it ({e.strerror})") from None
    if not out_dir.is_dir():
        raise OutputError(f"example folder {out_dir}: not a directory")
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"example folder {out_dir}: not writable")
    try:
        ours = set(json.loads((out_dir / MARKER).read_text()))
    except (OSError, ValueError, TypeError, RecursionError):
        ours = set()
    for name in EXAMPLE_FILES:
        if os.path.lexists(out_dir / name) and name not in ours:
            raise OutputError(f"example folder {out_dir}: {out_dir / name} exists and was not written by "
                              f"resqmp example; choose another folder")
    try:
        (out_dir / MARKER).write_text(json.dumps(EXAMPLE_FILES) + "\n")   # before the files it names
    except OSError as e:
        raise OutputError(f"example folder {out_dir}: cannot write there ({e.strerror})") from None


def _write(out_dir: Path, surfaces, wells, mesh_properties, extent_kji, outside_surface) -> Dict[str, object]:
    import resqpy.crs as rqc
    import resqpy.grid as grr
    import resqpy.model as rq
    import resqpy.property as rqp
    import resqpy.surface as rqs
    import resqpy.well as rqw

    epc = out_dir / "model.epc"
    model = rq.new_model(str(epc), quiet=True)   # replaces an earlier example's model.epc and .h5

    crs = rqc.Crs(model,
                  x_offset=CRS_OFFSETS[0],
                  y_offset=CRS_OFFSETS[1],
                  z_offset=CRS_OFFSETS[2],
                  xy_units="m",
                  z_units="m",
                  z_inc_down=True,
                  title="local depth crs")
    crs.create_xml()

    grid = grr.RegularGrid(model,
                           extent_kji=extent_kji,
                           dxyz=DXYZ,
                           origin=(0.0, 0.0, 0.0),  # find-faces needs the origin at (0, 0, 0)
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
    relative = "paths are relative to the folder holding this file"
    batch = out_dir / "batch.yaml"
    _write_batch(batch,
                 f"resqmp example: find faces (a grid connection set) for each fault surface\n{relative}",
                 "find_faces_to_represent_surface_regular",
                 {
                     "grid_epc": epc.name,
                     "grid_uuid": grid_uuid,
                     "surface_epc": epc.name,
                     "use_index_as_realisation": False,
                     "n_threads": 1,
                 },
                 [{
                     "surface_uuid": u,
                     "name": n
                 } for u, n in zip(surface_uuids, surface_names)])
    batch_mesh = out_dir / "batch-mesh.yaml"
    _write_batch(batch_mesh,
                 f"resqmp example: a mesh (Grid2dRepresentation) from each grid column property\n{relative}",
                 "mesh_from_regular_grid_column_property", {
                     "grid_epc": epc.name,
                     "grid_uuid": grid_uuid
                 }, [{
                     "prop_uuids": [u],
                     "name": n
                 } for u, n in zip(property_uuids, property_names)])
    batch_wells = out_dir / "batch-wells.yaml"
    _write_batch(batch_wells,
                 f"resqmp example: a blocked well in the grid from each well trajectory\n{relative}",
                 "blocked_well_from_trajectory", {
                     "grid_epc": epc.name,
                     "grid_uuid": grid_uuid,
                     "trajectory_epc": epc.name
                 }, [{
                     "trajectory_uuids": [u],
                     "name": n
                 } for u, n in zip(trajectory_uuids, trajectory_names)])

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
