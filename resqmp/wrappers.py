"""Wrapper functions resqmp ships for work resqpy has no multiprocessing wrapper for.

A wrapper has resqpy's contract: it takes ``index`` and ``parent_tmp_dir`` (supplied by resqmp, as
by ``function_multiprocessing``) plus the task's keyword arguments, writes its own model at
``parent_tmp_dir/<uuid>/wrapper.epc`` and returns ``(index, success, epc_file, uuid_list)``: the
parts of ``uuid_list`` are what the recombination copies into the output model.

resqpy's only find-faces wrapper, ``find_faces_to_represent_surface_regular_wrapper``, loads its grid
as an aligned ``RegularGrid`` and fails with a bare AssertionError on the corner-point IjkGrids of
real reservoir models. ``find_faces_to_represent_surface_wrapper`` here takes any IjkGrid: it loads
the grid with ``resqpy.grid.any_grid`` and calls resqpy's general
``resqpy.grid_surface.find_faces_to_represent_surface``, which picks resqpy's method for the grid
(``mode='auto'``: 'staffa' for a corner-point grid, 'regular_optimised' for an aligned regular
one). Surfaces, point sets and their interpretations are handled as resqpy's regular wrapper does,
except that a surface made from the given one keeps its interpretation through recombination.
"""
from __future__ import annotations

import logging
import uuid as uuid_module
from pathlib import Path

__all__ = ["find_faces_to_represent_surface_wrapper"]

log = logging.getLogger(__name__)

SURFACE_TYPES = ("TriangulatedSetRepresentation", "PointSetRepresentation")
CELL_LENGTH_TITLES = ("DX", "DY", "DZ")
INTERPRETATION_TYPES = ("HorizonInterpretation", "FaultInterpretation", "BoundaryFeatureInterpretation",
                        "GeobodyBoundaryInterpretation")


def find_faces_to_represent_surface_wrapper(index: int,
                                            parent_tmp_dir: str,
                                            grid_epc: str,
                                            grid_uuid: str,
                                            surface_epc: str,
                                            surface_uuid: str,
                                            name: str,
                                            title: str | None = None,
                                            feature_type: str = "fault",
                                            mode: str = "auto",
                                            trimmed: bool = True,
                                            extend_fault_representation: bool = False,
                                            flange_inner_ring: bool = False,
                                            saucer_parameter: float | None = None,
                                            flange_radius: float | None = None,
                                            retriangulate: bool = False,
                                            reorient: bool = True,
                                            related_uuid: str | None = None,
                                            extra_metadata: dict | None = None):
    """Find the cell faces of any IjkGrid that represent a surface: a grid connection set.

    arguments:
        index (int), parent_tmp_dir (str): supplied by resqmp (or resqpy's function_multiprocessing)
        grid_epc (str), grid_uuid (str): the grid, any IjkGridRepresentation (corner-point or regular)
        surface_epc (str), surface_uuid (str): a TriangulatedSetRepresentation, or a
            PointSetRepresentation, which is triangulated first (as resqpy's regular wrapper does)
        name (str): the feature name of the grid connection set
        title (str, optional): the citation title of the grid connection set; default: name
        feature_type (str, default 'fault'): 'fault', 'horizon' or 'geobody boundary'; the feature
            and interpretation of that kind are created with the grid connection set
        mode (str, default 'auto'): resqpy's find_faces_to_represent_surface mode; 'auto' is
            'staffa' for any grid that is not an aligned RegularGrid
        trimmed (bool, default True): True uses the surface as given, so the faces are exactly those
            of resqpy's find_faces_to_represent_surface; False first trims a surface of more than 100
            triangles (and a point set) to the grid's xyz box, as resqpy's regular wrapper does by
            default: faster, but a triangle crossing the box with no vertex inside it is dropped
        extend_fault_representation, flange_inner_ring, saucer_parameter, flange_radius,
        retriangulate, reorient: as in resqpy's find_faces_to_represent_surface_regular_wrapper
            (flange_radius defaults to 5 x the sum of the grid's xyz box sides)
        related_uuid (str, optional): a part (in the grid's or surface's EPC) to relate to the grid
            connection set
        extra_metadata (dict, optional): added to the grid connection set

    returns:
        (index, success, epc_file, uuid_list): success is False when no cell face represents the
        surface (it misses the grid); uuid_list holds the grid's CRS, the grid (with its DX, DY, DZ
        properties where present), the surface used (the triangulated or modified one) and the grid
        connection set
    """
    import numpy as np
    import resqpy.grid as grr
    import resqpy.grid_surface as rqgs
    import resqpy.model as rq
    import resqpy.property as rqp
    import resqpy.surface as rqs

    tmp_dir = Path(parent_tmp_dir) / str(uuid_module.uuid4())
    tmp_dir.mkdir(parents=True, exist_ok=True)
    epc_file = str(tmp_dir / "wrapper.epc")
    model = rq.new_model(epc_file=epc_file, quiet=True)
    uuid_list = []

    g_model = rq.Model(grid_epc, quiet=True)
    if g_model.part(uuid=grid_uuid) is None:
        raise ValueError(f"grid {grid_uuid} is not a part of {grid_epc}")
    model.copy_uuid_from_other_model(g_model, uuid=grid_uuid)   # with the parts it references (its CRS)
    grid = grr.any_grid(model, uuid=grid_uuid, find_properties=False, load_inactive=False)
    if grid is None or not hasattr(grid, "extent_kji"):
        raise ValueError(f"{grid_uuid} in {grid_epc} is not an IjkGrid")
    uuid_list += [u for u in (grid.crs_uuid, grid_uuid) if u is not None]
    for cell_length in CELL_LENGTH_TITLES:     # kept with the grid, as resqpy's regular wrapper does
        prop_uuid = g_model.uuid(obj_type="ContinuousProperty", title=cell_length, related_uuid=grid_uuid)
        if prop_uuid is not None:
            model.copy_uuid_from_other_model(g_model, uuid=prop_uuid)
            uuid_list.append(prop_uuid)
    grid_box = grid.xyz_box(local=True)
    if flange_radius is None:
        flange_radius = 5.0 * float(np.sum(grid_box[1] - grid_box[0]))

    s_model = rq.Model(surface_epc, quiet=True)
    surface_uuid = str(surface_uuid)
    if s_model.part(uuid=surface_uuid) is None:
        raise ValueError(f"surface {surface_uuid} is not a part of {surface_epc}")
    model.copy_uuid_from_other_model(s_model, uuid=surface_uuid)
    repr_type = model.type_of_part(model.part(uuid=surface_uuid), strip_obj=True)
    if repr_type not in SURFACE_TYPES:
        raise ValueError(f"surface {surface_uuid} in {surface_epc} is a {repr_type}, "
                         f"expected one of {', '.join(SURFACE_TYPES)}")

    flange_bool = None
    reshaped = False                # the surface used is a new one made from the given one
    if repr_type == "PointSetRepresentation":
        pset = rqs.PointSet(model, uuid=surface_uuid)
        surf_title = pset.title
        pset.change_crs(grid.crs)
        if not trimmed:
            pset.trim_to_xyz_box(grid_box)
            if "trimmed" not in surf_title:
                surf_title += " trimmed"
        if len(pset.full_array_ref()) < 3:
            raise ValueError(f"point set {pset.title} ({surface_uuid}) has fewer than 3 points within the grid's box")
        if extend_fault_representation and not surf_title.endswith(" extended"):
            surf_title += " extended"
        surface = rqs.Surface(model, crs_uuid=grid.crs.uuid, title=surf_title)
        flange_bool = surface.set_from_point_set(pset, convexity_parameter=2.0, reorient=reorient,
                                                 extend_with_flange=extend_fault_representation,
                                                 flange_inner_ring=flange_inner_ring,
                                                 saucer_parameter=saucer_parameter, flange_radial_factor=1.2,
                                                 flange_radial_distance=flange_radius, make_clockwise=False)
        _represent_same_interpretation(model, surface_uuid, surface)
        surface.write_hdf5()
        surface.create_xml()
        surface_uuid = str(surface.uuid)
    else:
        surface = rqs.Surface(model, uuid=surface_uuid)
        surface.change_crs(grid.crs)
        surf_title = surface.title
        # the given surface's orientation guides a retriangulation, as in resqpy's regular wrapper
        normal_vector = surface.normal() if reorient and (extend_fault_representation or retriangulate) else None
        if not trimmed and surface.triangle_count() > 100:
            if not surf_title.endswith("trimmed"):
                surf_title += " trimmed"
            trimmed_surface = rqs.Surface(model, crs_uuid=grid.crs.uuid, title=surf_title)
            trimmed_surface.set_to_trimmed_surface(surface, xyz_box=grid_box)
            trimmed_surface.extra_metadata = surface.extra_metadata
            surface, reshaped = trimmed_surface, True
        if extend_fault_representation or retriangulate:
            _, points = surface.triangles_and_points()
            pset = rqs.PointSet(model, points_array=points, crs_uuid=grid.crs.uuid, title=surf_title)
            if extend_fault_representation and not surf_title.endswith("extended"):
                surf_title += " extended"
            surface = rqs.Surface(model, crs_uuid=grid.crs.uuid, title=surf_title)
            flange_bool = surface.set_from_point_set(pset, convexity_parameter=2.0, reorient=reorient,
                                                     extend_with_flange=extend_fault_representation,
                                                     flange_inner_ring=flange_inner_ring,
                                                     saucer_parameter=saucer_parameter,
                                                     flange_radial_distance=flange_radius, make_clockwise=False,
                                                     normal_vector=normal_vector)
            reshaped = True
        if reshaped:
            _represent_same_interpretation(model, surface_uuid, surface)
            surface.write_hdf5()
            surface.create_xml()
            # the new surface comes from the given one (as in resqpy's regular wrapper)
            model.create_reciprocal_relationship_uuids(surface.uuid, "sourceObject", surface_uuid, "destinationObject")
            surface_uuid = str(surface.uuid)
    if flange_bool is not None:
        flange = rqp.Property.from_array(parent_model=model, cached_array=flange_bool,
                                         source_info="flange bool array", keyword="flange bool",
                                         support_uuid=surface_uuid, property_kind="flange bool",
                                         find_local_property_kind=True, indexable_element="faces",
                                         discrete=True, dtype=np.uint8)
        uuid_list.append(flange.uuid)
    uuid_list.append(surface_uuid)

    gcs = rqgs.find_faces_to_represent_surface(grid, surface, name, mode=mode, feature_type=feature_type)
    success = gcs is not None and gcs.count > 0     # resqpy returns None when no face was found
    if success:
        gcs.write_hdf5()
        gcs.create_xml(title=title, extra_metadata=extra_metadata)
        if related_uuid is not None:
            _relate(model, gcs.uuid, related_uuid, (g_model, s_model))
        uuid_list.append(gcs.uuid)
    else:
        log.warning(f"no cell face of grid {grid_uuid} represents surface {name!r} ({surface_uuid}): "
                    "does it cross the grid?")
    model.store_epc(quiet=True)
    return index, success, epc_file, [str(u) for u in uuid_list]


def _represent_same_interpretation(model, source_uuid, surface) -> None:
    """A surface made from another (triangulated from a point set, trimmed, extended) represents
    the interpretation its source did. resqpy's regular wrapper only relates the two in the task's
    rels, and the interpretation is not in its uuid_list, so recombination drops it; as the new
    surface's RepresentedInterpretation it is copied with the surface. Call before create_xml."""
    for obj_type in INTERPRETATION_TYPES:
        interp_uuid = model.uuid(obj_type=obj_type, related_uuid=source_uuid)
        if interp_uuid is not None:
            surface.set_represented_interpretation_root(model.root_for_uuid(interp_uuid))
            return


def _relate(model, gcs_uuid, related_uuid, source_models) -> None:
    """Relate the grid connection set to related_uuid, copying that part in from where it lives."""
    found = model.uuid(uuid=related_uuid) is not None
    for other in source_models:
        if found:
            break
        if other.uuid(uuid=related_uuid) is not None:
            model.copy_uuid_from_other_model(other, related_uuid)
            found = True
    if found:
        model.create_reciprocal_relationship_uuids(gcs_uuid, "sourceObject", related_uuid, "destinationObject")
    else:
        log.warning(f"related uuid {related_uuid} not found in the grid's or the surface's model; relationship dropped")
