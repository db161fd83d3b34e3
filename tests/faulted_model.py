"""A test model the way a reservoir model looks, built with resqpy alone (not resqmp.example):

``faulted.epc``: an irregular corner-point IjkGrid "faulted grid" (sheared, inclined pillars,
undulating layers of uneven thickness, two faults whose throws split the pillars), an aligned
RegularGrid "regular grid" with DX/DY/DZ and two column properties, two well trajectories.

``more_maps.epc``: another column property of the regular grid ("extra map").

``surfaces.epc``: in a CRS of its own (other offsets than the grids'), fault surfaces "F1 east"
(with a fault interpretation), "F2 north", "F3 oblique" (a fine lattice: more than 100 triangles,
with triangles outside the grid), a horizon point set "H1 horizon points" (with a horizon
interpretation), "R1 regular fault" crossing the regular grid, and "X outside", east of everything.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GRID_CRS_OFFSETS = (420000.0, 6100000.0, 0.0)
SURFACE_CRS_OFFSETS = (421000.0, 6100000.0, 500.0)     # surface local = grid local - (1000, 0, 500)
EXTENT_KJI = (5, 8, 10)
THICKNESS = (8.0, 12.0, 10.0, 6.0, 14.0)


def _lattice_triangles(nu: int, nv: int) -> np.ndarray:
    tris = []
    for a in range(nu - 1):
        for b in range(nv - 1):
            p00 = a * nv + b
            tris += [(p00, p00 + 1, p00 + nv + 1), (p00, p00 + nv + 1, p00 + nv)]
    return np.array(tris, dtype=np.int32)


def _corner_points() -> np.ndarray:
    """(nk, nj, ni, 2, 2, 2, 3) corner points in the grid's local CRS (z down)."""
    nk, nj, ni = EXTENT_KJI
    depth_below_top = np.concatenate(([0.0], np.cumsum(THICKNESS)))
    cp = np.empty((nk, nj, ni, 2, 2, 2, 3))
    for k in range(nk):
        for j in range(nj):
            for i in range(ni):
                # fault throws belong to the cell's block: neighbouring cells disagree at the pillars
                throw = (25.0 if i >= 5 else 0.0) + (10.0 if j >= 5 else 0.0)
                for kp in range(2):
                    for jp in range(2):
                        for ip in range(2):
                            pj, pi = j + jp, i + ip
                            top = 1000.0 + 20.0 * np.sin(pi / 3.0) + 10.0 * pj + 1.5 * np.cos(pj * pi)
                            # layers thin and thicken across the grid
                            z = top + depth_below_top[k + kp] * (1.0 + 0.02 * pi - 0.01 * pj) + throw
                            x = pi * 100.0 + 8.0 * pj + 0.05 * (z - 1000.0)        # sheared, inclined pillars
                            y = pj * 100.0 + 5.0 * pi
                            cp[k, j, i, kp, jp, ip] = (x, y, z)
    return cp


def _plane(points_grid_local: np.ndarray) -> np.ndarray:
    """Grid-local points -> the surfaces' CRS."""
    shift = np.array(SURFACE_CRS_OFFSETS) - np.array(GRID_CRS_OFFSETS)
    return points_grid_local - shift


def _lattice(u0, u1, nu, v0, v1, nv, xyz) -> tuple[np.ndarray, np.ndarray]:
    us, vs = np.linspace(u0, u1, nu), np.linspace(v0, v1, nv)
    uu, vv = np.meshgrid(us, vs, indexing="ij")
    return _lattice_triangles(nu, nv), _plane(np.stack(xyz(uu, vv), axis=-1).reshape(-1, 3))


def write_faulted_model(folder) -> dict:
    """Write faulted.epc and surfaces.epc into folder; returns their paths and the parts' uuids."""
    import resqpy.crs as rqc
    import resqpy.grid as grr
    import resqpy.model as rq
    import resqpy.olio.uuid as bu
    import resqpy.organize as rqo
    import resqpy.property as rqp
    import resqpy.rq_import as rqi
    import resqpy.surface as rqs
    import resqpy.well as rqw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = rq.new_model(str(folder / "faulted.epc"), quiet=True)
    crs = rqc.Crs(model, x_offset=GRID_CRS_OFFSETS[0], y_offset=GRID_CRS_OFFSETS[1], z_offset=GRID_CRS_OFFSETS[2],
                  xy_units="m", z_units="m", z_inc_down=True, title="grid crs")
    crs.create_xml()

    grid = rqi.grid_from_cp(model, _corner_points(), crs.uuid)
    grid.write_hdf5()
    grid.create_xml(title="faulted grid")
    assert grid.has_split_coordinate_lines, "the faults must split pillars"

    regular = grr.RegularGrid(model, extent_kji=(3, 6, 6), dxyz=(100.0, 100.0, 20.0), origin=(0.0, 0.0, 0.0),
                              crs_uuid=crs.uuid, title="regular grid", set_points_cached=False)
    regular.create_xml(add_cell_length_properties=True)
    column_properties = {}
    for p, name in enumerate(("top map", "base map")):
        j, i = np.meshgrid(np.arange(6.0), np.arange(6.0), indexing="ij")
        values = 10.0 + 20.0 * p + 5.0 * np.sin(i + p) + 2.0 * j
        prop = rqp.Property.from_array(model, values, source_info="faulted_model", keyword=name,
                                       support_uuid=regular.uuid, property_kind="depth",
                                       indexable_element="columns", uom="m")
        column_properties[name] = str(prop.uuid)

    trajectories = {}
    for w, (x, y) in enumerate(((250.0, 250.0), (720.0, 610.0))):
        name = f"W{w + 1}"
        pts = np.array([(x, y, 900.0), (x, y, 980.0), (x + 30.0, y + 20.0, 1050.0), (x + 60.0, y + 40.0, 1150.0)])
        mds = np.concatenate(([0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))))
        datum = rqw.MdDatum(model, crs_uuid=crs.uuid, location=tuple(pts[0]), md_reference="kelly bushing",
                            title=f"{name} datum")
        datum.create_xml()
        traj = rqw.Trajectory(model, md_datum=datum, mds=mds, control_points=pts, length_uom="m", well_name=name)
        traj.write_hdf5()
        traj.create_xml()
        trajectories[name] = str(traj.uuid)
    model.store_epc(quiet=True)

    # a column property of the regular grid kept in an EPC of its own
    pmodel = rq.new_model(str(folder / "more_maps.epc"), quiet=True)
    pmodel.copy_uuid_from_other_model(model, uuid=regular.uuid)
    j, i = np.meshgrid(np.arange(6.0), np.arange(6.0), indexing="ij")
    rqp.Property.from_array(pmodel, 30.0 + i + j, source_info="faulted_model", keyword="extra map",
                            support_uuid=regular.uuid, property_kind="depth", indexable_element="columns", uom="m")
    pmodel.store_epc(quiet=True)
    pmodel.h5_release()
    model.h5_release()

    smodel = rq.new_model(str(folder / "surfaces.epc"), quiet=True)
    scrs = rqc.Crs(smodel, x_offset=SURFACE_CRS_OFFSETS[0], y_offset=SURFACE_CRS_OFFSETS[1],
                   z_offset=SURFACE_CRS_OFFSETS[2], xy_units="m", z_units="m", z_inc_down=True, title="surface crs")
    scrs.create_xml()
    surfaces = {}

    def add_surface(title, triangles_points, interpretation=None):
        triangles, points = triangles_points
        surface = rqs.Surface(smodel, crs_uuid=scrs.uuid, title=title)
        surface.set_from_triangles_and_points(triangles, points)
        if interpretation is not None:
            surface.set_represented_interpretation_root(interpretation.root)
        surface.write_hdf5()
        surface.create_xml()
        surfaces[title] = str(surface.uuid)

    feature = rqo.TectonicBoundaryFeature(smodel, kind="fault", feature_name="F1 east")
    feature.create_xml()
    fault_interp = rqo.FaultInterpretation(smodel, tectonic_boundary_feature=feature, is_normal=True)
    fault_interp.create_xml()
    # near the i=5 fault, dipping east, beyond the grid in y and z
    add_surface("F1 east", _lattice(-100.0, 950.0, 5, 880.0, 1250.0, 4,
                                    lambda y, z: (470.0 + 0.3 * (z - 1050.0) + 0.02 * y, y, z)), fault_interp)
    add_surface("F2 north", _lattice(-100.0, 1200.0, 6, 880.0, 1250.0, 4,
                                     lambda x, z: (x, 460.0 + 0.25 * (z - 1050.0) + 0.03 * x, z)))
    # a fine oblique lattice reaching well outside the grid: more than 100 triangles
    add_surface("F3 oblique", _lattice(-400.0, 1400.0, 12, 850.0, 1300.0, 8,
                                       lambda u, z: (200.0 + 0.6 * u + 0.2 * (z - 1050.0), 100.0 + 0.5 * u, z)))
    hfeature = rqo.GeneticBoundaryFeature(smodel, kind="horizon", feature_name="H1")
    hfeature.create_xml()
    h_interp = rqo.HorizonInterpretation(smodel, genetic_boundary_feature=hfeature)
    h_interp.create_xml()
    xs, ys = np.meshgrid(np.linspace(-50.0, 1100.0, 9), np.linspace(-50.0, 900.0, 8), indexing="ij")
    hz = 1020.0 + 20.0 * np.sin(xs / 300.0) + 0.01 * ys + 1.7 * np.cos(0.37 * xs + 0.11 * ys)
    pset = rqs.PointSet(smodel, points_array=_plane(np.stack((xs, ys, hz), axis=-1).reshape(-1, 3)),
                        crs_uuid=scrs.uuid, title="H1 horizon points")
    pset.set_represented_interpretation_root(h_interp.root)
    pset.write_hdf5()
    pset.create_xml()
    surfaces["H1 horizon points"] = str(pset.uuid)
    add_surface("R1 regular fault", _lattice(-100.0, 700.0, 5, -10.0, 80.0, 4,
                                             lambda y, z: (250.0 + 0.4 * z + 0.01 * y, y, z)))
    add_surface("X outside", _lattice(0.0, 800.0, 3, 950.0, 1100.0, 3, lambda y, z: (5000.0 + 0 * y, y, z)))
    smodel.store_epc(quiet=True)
    smodel.h5_release()
    assert bu.matching_uuids(grid.crs_uuid, crs.uuid)
    return {"model": folder / "faulted.epc", "surfaces_epc": folder / "surfaces.epc",
            "more_maps_epc": folder / "more_maps.epc", "grid_uuid": str(grid.uuid),
            "regular_uuid": str(regular.uuid), "surfaces": surfaces, "trajectories": trajectories,
            "column_properties": column_properties, "fault_interpretation": str(fault_interp.uuid),
            "horizon_interpretation": str(h_interp.uuid)}
