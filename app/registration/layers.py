"""The registration's layers: images, overlays, the deformation, the Jacobian and folds.

:func:`result_layers` builds plain layer tuples (no Qt, no napari: it runs on the run's
background thread); :class:`RegistrationLayers` adds them to the viewer on the GUI thread and
keeps the deformation grid following the axial slice on screen.

Geometry: every layer goes through :mod:`app.layers`. Images and labels carry their own
napari affine; arrows and grid lines, computed in RAS mm by
:mod:`uda_core.exports.overlay`, are mapped to world (S, P, L) mm by
:func:`~app.layers.world_from_ras` and then into the fixed image's display voxels, and carry
the fixed image's napari affine, so they slice exactly like the fixed image.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes

from uda_core.exports.overlay import (
    blend,
    checkerboard,
    deformation_grid_lines,
    displacement_arrows,
    fold_mask,
    slice_axis,
)
from uda_core.io.intensity import foreground_mask

from ..layers import image_layer, labels_layer, ras_from_world, to_display, world_from_ras

TILE_VOX = 8           # checkerboard tile edge, voxels of the fixed grid
ARROW_STEP_VOX = 5     # in-plane distance between arrows, voxels (every slice has arrows)
GRID_SPACING_VOX = 4   # distance between deformation grid lines, voxels
ARROW_COLOUR = "#00e5ff"   # cyan: stands out on grey levels
GRID_COLOUR = "#ffb000"    # amber
FOLD_COLOUR = (1.0, 0.0, 1.0, 1.0)  # magenta: no other layer uses it
TISSUE_CLASSES = ["background", "CSF", "GM", "WM"]  # the demo's label convention
#: Jacobian determinant: blue (shrinks, 0) - white (1) - red (grows, 2)
JACOBIAN_COLORMAP = {"name": "jacobian: blue shrinks, red grows",
                     "colors": [[0.13, 0.40, 0.67, 1.0], [1.0, 1.0, 1.0, 1.0],
                                [0.70, 0.09, 0.17, 1.0]],
                     "controls": [0.0, 0.5, 1.0]}

#: layer names, bottom to top, and whether each is shown at first
LAYER_ORDER = (("fixed", False), ("moving", False), ("warped", False), ("blend", False),
               ("Jacobian determinant", False), ("checkerboard", True),
               ("moving labels warped", False), ("deformation grid", False),
               ("deformation", True), ("folds", True))
NAMES = tuple(name for name, _ in LAYER_ORDER)


def label_names(labels: np.ndarray) -> list[str]:
    """The demo's tissue names when the labels fit them (0..3), else "label <n>"."""
    top = int(labels.max()) if labels.size else 0
    if top < len(TISSUE_CLASSES):
        return list(TISSUE_CLASSES)
    return ["background"] + [f"label {n}" for n in range(1, top + 1)]


def display_points(points_ras: np.ndarray, display_affine: np.ndarray) -> np.ndarray:
    """RAS mm points (N, 3) -> the display voxel coordinates (N, 3) of a layer whose napari
    affine (world (S, P, L) mm <- display voxels) is ``display_affine``."""
    world = world_from_ras(points_ras)
    return (world - display_affine[:3, 3]) @ np.linalg.inv(display_affine[:3, :3]).T


def display_vectors(vectors_ras: np.ndarray, display_affine: np.ndarray) -> np.ndarray:
    """RAS mm vectors (N, 3) -> display voxel vectors (N, 3): directions, no translation
    (world_from_ras is a linear map, so it turns vectors like points)."""
    return world_from_ras(vectors_ras) @ np.linalg.inv(display_affine[:3, :3]).T


def arrow_layer(field_mm: np.ndarray, affine: np.ndarray, head: np.ndarray | None = None
                ) -> tuple:
    """Vectors tuple "deformation": arrows from fixed voxels (every slice, sparse in-plane,
    only inside ``head`` (X, Y, Z) bool when given) along the in-plane part of u (what an
    axial view can show; a pre-alignment's through-plane part is left out), true length;
    data (N, 2, 3) in the fixed image's display voxels, display axis 0 the slice axis."""
    steps = [ARROW_STEP_VOX] * 3
    steps[slice_axis(affine)] = 1
    arrows = displacement_arrows(field_mm, affine, step_vox=steps, mask=head)
    display_affine = to_display(field_mm[..., 0], affine)[1]
    vectors = display_vectors(arrows[:, 1], display_affine)
    vectors[:, 0] = 0.0
    data = np.stack([display_points(arrows[:, 0], display_affine), vectors], axis=1)
    kwargs = {"name": "deformation", "affine": display_affine, "edge_color": ARROW_COLOUR,
              "edge_width": 0.6, "length": 1.0, "vector_style": "arrow", "opacity": 0.9,
              "metadata": {"what": "pull field u: warped(p) = moving(p + u), mm"}}
    return data, kwargs, "vectors"


def grid_paths(field_mm: np.ndarray, affine: np.ndarray, slice_index: int) -> list[np.ndarray]:
    """The deformed grid of one slice (:func:`deformation_grid_lines`) in display voxels,
    drawn in that slice (display axis 0): the in-plane part of the movement."""
    display_affine = to_display(field_mm[..., 0], affine)[1]
    lines = deformation_grid_lines(field_mm, affine, GRID_SPACING_VOX, slice_index)
    paths = [display_points(line, display_affine) for line in lines]
    voxel = np.zeros(4)
    voxel[slice_axis(affine)], voxel[3] = slice_index, 1.0
    plane = display_points((affine @ voxel)[None, :3], display_affine)[0, 0]
    for path in paths:
        path[:, 0] = plane
    return paths


def result_layers(outcome) -> list[tuple]:
    """All layer tuples of a finished registration, in :data:`LAYER_ORDER`, with
    ``visible`` set. ``outcome``: :class:`app.registration.run.RegistrationOutcome`."""
    fixed, result = outcome.fixed, outcome.result
    warped = result.warped.data
    in_plane = [a for a in range(3) if a != slice_axis(fixed.affine)]
    unit = {"contrast_limits": (0.0, 1.0)}
    layers = {
        "fixed": image_layer(fixed, "fixed"),
        "moving": image_layer(outcome.moving, "moving"),
        "warped": image_layer(result.warped, "warped"),
        "blend": image_layer(fixed.with_data(blend(fixed.data, warped)), "blend", **unit),
        "Jacobian determinant": image_layer(result.jacobian, "Jacobian determinant",
                                            colormap=JACOBIAN_COLORMAP,
                                            contrast_limits=(0.0, 2.0)),
        "checkerboard": image_layer(
            fixed.with_data(checkerboard(fixed.data, warped, TILE_VOX, in_plane)),
            "checkerboard", **unit),
        "deformation": arrow_layer(result.field_mm.data, fixed.affine,
                                   binary_fill_holes(foreground_mask(fixed.data))),
        "folds": labels_layer(fold_mask(result.jacobian.data), fixed.affine,
                              ["no fold", "fold (det J <= 0)"], "folds", opacity=1.0,
                              colormap={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: FOLD_COLOUR}),
    }
    if result.labels_warped is not None:
        labels = result.labels_warped.data
        layers["moving labels warped"] = labels_layer(labels, fixed.affine, label_names(labels),
                                                      "moving labels warped")
    ordered = []
    for name, visible in LAYER_ORDER:
        if name in layers:
            data, kwargs, kind = layers[name]
            ordered.append((data, {**kwargs, "visible": visible}, kind))
    return ordered


class RegistrationLayers:
    """The viewer's registration layers; touched on the GUI thread only."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.field_mm: np.ndarray | None = None
        self.affine: np.ndarray | None = None
        viewer.dims.events.current_step.connect(self.refresh_grid)

    def get(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def show(self, outcome) -> None:
        """Replace the previous run's layers by ``outcome.layers`` (+ the grid layer)."""
        for name in NAMES:
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.field_mm = outcome.result.field_mm.data
        self.affine = outcome.fixed.affine
        for data, kwargs, kind in outcome.layers:
            if kwargs["name"] == "deformation":
                self._add_grid()
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        checkerboard_layer = self.get("checkerboard")
        if checkerboard_layer is not None:
            self.viewer.layers.selection.active = checkerboard_layer

    def _add_grid(self) -> None:
        """The "deformation grid" Shapes layer (hidden at first): the grid of one axial
        slice, redrawn when the slice changes while it is shown."""
        paths = grid_paths(self.field_mm, self.affine, self.current_slice())
        layer = self.viewer.add_shapes(
            paths, shape_type="path", name="deformation grid", edge_color=GRID_COLOUR,
            edge_width=0.25, affine=to_display(self.field_mm[..., 0], self.affine)[1],
            visible=False, metadata={"slice_index": self.current_slice()})
        layer.events.visible.connect(self.refresh_grid)

    def current_slice(self) -> int:
        """The fixed grid's axial slice under the viewer's current S position."""
        axis = slice_axis(self.affine)
        size = self.field_mm.shape[axis]
        centre_ras = self.affine[:3, :3] @ (np.array(self.field_mm.shape[:3]) - 1) / 2
        centre_ras = centre_ras + self.affine[:3, 3]
        world = world_from_ras(centre_ras[None])[0]
        world[0] = self.viewer.dims.point[0]
        voxel = np.linalg.inv(self.affine) @ np.append(ras_from_world(world[None])[0], 1.0)
        return int(np.clip(np.rint(voxel[axis]), 0, size - 1))

    def refresh_grid(self, event=None) -> None:
        layer = self.get("deformation grid")
        if layer is None or not layer.visible or self.field_mm is None:
            return
        index = self.current_slice()
        if layer.metadata.get("slice_index") != index:
            layer.data = grid_paths(self.field_mm, self.affine, index)
            layer.metadata["slice_index"] = index
