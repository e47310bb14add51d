"""Turn uda_core volumes into napari layer data that line up in one world space.

Display convention
------------------
napari's world axes are (S, P, L) in millimetres: axis 0 points superior (the slider walks
from the feet to the head), axis 1 posterior (screen rows: anterior at the top) and axis 2
to the patient's left (screen columns: the patient's right on the screen's left). An axial
slice is therefore shown radiologically, as if looking up from the feet.

The maths
---------
A :class:`~uda_core.io.Volume` maps voxel indices p = (i, j, k, 1) to RAS+ mm by its affine
A: ras = A p. World (S, P, L) from RAS is the fixed signed permutation

    M = [[0, 0, 1, 0],        S = +z
         [0, -1, 0, 0],       P = -y
         [-1, 0, 0, 0],       L = -x
         [0, 0, 0, 1]]

so world = W p with W = M A. ``nibabel.orientations.io_orientation(W)`` gives, for each
array axis, the world axis it runs closest to and its sign. Transposing and flipping the
array by that orientation (``apply_orientation``: numpy views, no copy) gives a display
array whose axis d runs along +world axis d. With T = ``inv_ornt_aff(ornt, shape)``, the
matrix taking display indices q to the original indices p = T q, napari receives

    affine_napari = W T        (world mm <- display indices)

For an axis-aligned scan W T is diagonal (voxel sizes in mm) plus a translation; for an
oblique scan it keeps the residual rotation (each array axis now runs closest to its own
world axis, so the rotation is small for the usual tilted slabs). Every voxel
keeps its world position: affine_napari q = M A p. Points in RAS mm reach the same world by
:func:`world_from_ras`.

Coronal and sagittal views (the slider on P or on L) put S on the screen's rows, and screen
rows grow downwards, which would show the head upside down. :func:`keep_head_up` turns the 2D
camera's vertical axis "up" whenever S is the displayed vertical axis (so the vertex is at the
top), and back "down" for the axial view (anterior at the top). The horizontal axis stays
"right": patient's left on the screen's right in axial and coronal views (radiological
convention, :data:`CONVENTION_NOTE`), anterior on the left in the sagittal view.

M has determinant -1 (S, P, L is a left-handed frame). The 2D views are what radiologists
expect; for an unmirrored 3D view set the camera's orientation (``viewer.scene.camera`` in
napari >= 0.9, ``viewer.camera`` before) to :data:`CAMERA_ORIENTATION` (depth axis pointing
away from the viewer, i.e. looking up from the feet as in the axial slices).

Layer data are plain ``(data, kwargs, layer_type)`` tuples (napari's LayerDataTuple), so this
module imports neither Qt nor napari.
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from uda_core.io.intensity import foreground_mask
from uda_core.io.volume import Volume

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]
RGBA = tuple[float, float, float, float]

#: world (S, P, L, 1) <- RAS+ (x, y, z, 1), both in mm.
WORLD_FROM_RAS = np.array([[0.0, 0.0, 1.0, 0.0],
                           [0.0, -1.0, 0.0, 0.0],
                           [-1.0, 0.0, 0.0, 0.0],
                           [0.0, 0.0, 0.0, 1.0]])
#: RAS+ <- world (S, P, L); M is orthogonal, so its inverse is its transpose.
RAS_FROM_WORLD = WORLD_FROM_RAS.T.copy()
#: napari camera orientation (depth, vertical, horizontal) that matches the left-handed world.
CAMERA_ORIENTATION = ("away", "down", "right")
#: world axis names, in napari's axis order.
AXIS_LABELS = ("S (mm)", "P (mm)", "L (mm)")
#: the display convention in one line, for the canvas overlay and help.
CONVENTION_NOTE = "Radiological view: patient's right on the screen's left, head up"
SUPERIOR_AXIS = 0   # world axis S

_IDENTITY_ORNT = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
_TRANSPARENT: RGBA = (0.0, 0.0, 0.0, 0.0)
_UNKNOWN_LABEL: RGBA = (0.85, 0.85, 0.85, 1.0)  # labels beyond the class list: light grey

# Okabe & Ito's colour-blind safe palette (black left out: it vanishes on MRI background).
_OKABE_ITO: tuple[RGBA, ...] = (
    (0.902, 0.624, 0.000, 1.0),  # orange
    (0.337, 0.706, 0.914, 1.0),  # sky blue
    (0.000, 0.620, 0.451, 1.0),  # bluish green
    (0.941, 0.894, 0.259, 1.0),  # yellow
    (0.000, 0.447, 0.698, 1.0),  # blue
    (0.835, 0.369, 0.000, 1.0),  # vermillion
    (0.800, 0.475, 0.655, 1.0),  # reddish purple
)
# Sky blue / vermillion / yellow: the Okabe-Ito triple that stays most separable under
# simulated deuteranopia, protanopia and tritanopia (Machado et al. 2009 matrices).
_TISSUE_COLOURS: dict[str, RGBA] = {
    "csf": _OKABE_ITO[1], "cerebrospinal fluid": _OKABE_ITO[1],
    "gm": _OKABE_ITO[5], "grey matter": _OKABE_ITO[5], "gray matter": _OKABE_ITO[5],
    "wm": _OKABE_ITO[3], "white matter": _OKABE_ITO[3],
}


# --- geometry ------------------------------------------------------------------------------

def display_orientation(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation (3, 2) taking array axes to the display axes (S, P, L).

    Row n is (display axis of array axis n, +1 or -1 for a flip). Raises ValueError for a
    degenerate affine (a zero-length voxel axis).
    """
    world_from_voxel = WORLD_FROM_RAS @ np.asarray(affine, dtype=np.float64)
    ornt = io_orientation(world_from_voxel)
    if np.isnan(ornt).any():
        raise ValueError("the affine has a degenerate (zero-length) voxel axis")
    return ornt_transform(ornt, _IDENTITY_ORNT)


def to_display(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a volume for napari.

    Args:
        data: voxel array (X, Y, Z) in the order the affine expects.
        affine: 4x4 voxel indices -> RAS+ mm.

    Returns:
        (view, affine_napari): ``view`` is ``data`` transposed/flipped (a numpy view) so its
        axes run closest to (S, P, L); ``affine_napari`` is the 4x4 world (S, P, L) mm <-
        view indices, diagonal plus translation for an axis-aligned scan.
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D volume (X, Y, Z), got shape {data.shape}")
    ornt = display_orientation(affine)
    view = apply_orientation(data, ornt)
    original_from_view = inv_ornt_aff(ornt, data.shape)
    affine_napari = WORLD_FROM_RAS @ np.asarray(affine, dtype=np.float64) @ original_from_view
    return view, affine_napari


def from_display(view: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Undo :func:`to_display`: the (X, Y, Z) array in the voxel order of ``affine``.

    Use it to save what was edited in napari (e.g. painted labels) on the input's own grid.

    Args:
        view: display array, as returned by :func:`to_display` (or edited from it).
        affine: the ORIGINAL 4x4 voxel -> RAS+ mm affine given to :func:`to_display`.
    """
    ornt = display_orientation(affine)
    return apply_orientation(np.asarray(view), ornt_transform(_IDENTITY_ORNT, ornt))


def world_from_ras(points_ras: np.ndarray) -> np.ndarray:
    """Points (N, 3) in RAS+ mm -> napari world (N, 3) in (S, P, L) mm."""
    points = np.asarray(points_ras, dtype=np.float64)
    return points @ WORLD_FROM_RAS[:3, :3].T


def ras_from_world(points_world: np.ndarray) -> np.ndarray:
    """napari world points (N, 3) in (S, P, L) mm -> RAS+ mm (N, 3)."""
    points = np.asarray(points_world, dtype=np.float64)
    return points @ RAS_FROM_WORLD[:3, :3].T


def orientation_2d(displayed: tuple[int, int]) -> tuple[str, str]:
    """napari's 2D camera orientation (vertical, horizontal) for the displayed world axes
    (rows, columns): vertical "up" when the rows are S (coronal, sagittal: head up), "down"
    otherwise (axial: anterior at the top); horizontal always "right"."""
    return ("up" if displayed[0] == SUPERIOR_AXIS else "down"), "right"


def keep_head_up(viewer) -> None:
    """Keep the 2D camera's orientation on :func:`orientation_2d` of the displayed axes as
    the user rolls or transposes them (napari viewer, duck-typed: no napari import here);
    a 3D view keeps :data:`CAMERA_ORIENTATION`. Idempotent per viewer."""
    if getattr(viewer, "_uda_head_up", False):
        return
    camera = getattr(getattr(viewer, "scene", viewer), "camera", None) or viewer.camera

    def follow(*_) -> None:
        if viewer.dims.ndisplay == 2:
            camera.orientation2d = orientation_2d(tuple(viewer.dims.displayed[-2:]))
        else:
            camera.orientation = CAMERA_ORIENTATION

    viewer.dims.events.order.connect(follow)
    viewer.dims.events.ndisplay.connect(follow)
    viewer._uda_head_up = True
    follow()


# --- colours -------------------------------------------------------------------------------

def class_colours(class_names: list[str]) -> dict[int, RGBA]:
    """RGBA (0..1) per class index.

    Index 0 and any class called "background" are transparent; CSF, GM and WM (by name, any
    case, also spelled out) get fixed Okabe-Ito colours (sky blue, vermillion, yellow);
    other classes take the remaining Okabe-Ito colours in order, then evenly spread hues.
    """
    colours: dict[int, RGBA] = {}
    for index, name in enumerate(class_names):
        key = str(name).strip().lower()
        if index == 0 or key == "background":
            colours[index] = _TRANSPARENT
        elif key in _TISSUE_COLOURS and _TISSUE_COLOURS[key] not in colours.values():
            colours[index] = _TISSUE_COLOURS[key]
    extra = iter([c for c in _OKABE_ITO if c not in colours.values()])
    for index in range(len(class_names)):
        if index not in colours:
            colours[index] = next(extra, None) or _spread_hue(index)
    return colours


def _spread_hue(index: int) -> RGBA:
    """A saturated colour whose hue steps by the golden angle, for palettes beyond 7."""
    hue = (index * 0.381966) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return (red, green, blue, 1.0)


# --- layers --------------------------------------------------------------------------------

def contrast_limits(data: np.ndarray) -> tuple[float, float]:
    """Display window (low, high) in image units: 0.5th and 99.5th percentiles of the
    foreground (Otsu, :func:`uda_core.io.foreground_mask`), so background noise and a few
    hot voxels do not squeeze the grey levels. A flat foreground (e.g. a binary mask) gets
    the full (min, max) range instead; a constant volume gets (value, value + 1)."""
    mask = foreground_mask(data)
    values = data[mask] if np.any(mask) else np.ravel(data)
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if not high > low:
        low, high = float(np.min(data)), float(np.max(data))
    if not high > low:
        high = low + 1.0
    return low, high


def image_layer(volume: Volume, name: str, **extra: Any) -> LayerDataTuple:
    """A napari image layer tuple for ``volume`` (data (X, Y, Z), affine voxel -> RAS mm).

    kwargs: name, affine (world (S, P, L) mm <- display indices), grey colormap, contrast
    limits from :func:`contrast_limits`, metadata (source path, RAS affine, orientation).
    ``extra`` overrides or adds kwargs; an extra ``metadata`` dict is merged.
    """
    view, affine = to_display(volume.data, volume.affine)
    metadata = {"source": volume.source, "ras_affine": volume.affine,
                "orientation": volume.orientation, "spacing_mm": volume.spacing}
    metadata.update(extra.pop("metadata", None) or {})
    kwargs = {"name": name, "affine": affine, "colormap": "gray",
              "contrast_limits": contrast_limits(volume.data), "metadata": metadata}
    kwargs.update(extra)
    return view, kwargs, "image"


def labels_layer(labels: np.ndarray, affine: np.ndarray, class_names: list[str], name: str,
                 **extra: Any) -> LayerDataTuple:
    """A napari labels layer tuple for an integer label map.

    Args:
        labels: integer (X, Y, Z) array (uint8/int16), values index ``class_names``.
        affine: 4x4 voxel -> RAS+ mm.
        class_names: name of each label value, index order (0 = background).
        name: layer name.
        extra: more layer kwargs (override the defaults; ``metadata`` is merged).

    kwargs: affine (world (S, P, L) mm), colormap {label: RGBA, None: default} (napari makes
    a DirectLabelColormap of it), features {"index", "class"} so the status bar names the
    class under the cursor, opacity, metadata (class names, RAS affine).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be an integer array, got {labels.dtype}")
    view, world_affine = to_display(labels, affine)
    colormap: dict[int | None, RGBA] = {None: _UNKNOWN_LABEL}
    colormap.update(class_colours(class_names))
    metadata = {"class_names": list(class_names),
                "ras_affine": np.asarray(affine, dtype=np.float64)}
    metadata.update(extra.pop("metadata", None) or {})
    kwargs = {"name": name, "affine": world_affine, "colormap": colormap, "opacity": 0.5,
              "features": {"index": np.arange(len(class_names)),
                           "class": [str(n) for n in class_names]},
              "metadata": metadata}
    kwargs.update(extra)
    return view, kwargs, "labels"
