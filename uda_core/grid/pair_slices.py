"""Two images of one subject on one model grid: the slices that registration works on.

The fixed image goes through :func:`uda_core.grid.prepare.prepare_volume` (its model grid,
centred on its head, normalised). The other image is resampled onto the SAME grid through
world coordinates (trilinear, outside filled with its minimum; no registration: the two are
taken to be aligned in world space, e.g. a T1/T2 pair of one session, or already on one voxel
grid) and normalised with the same specification. A slice counts as "head" when the fixed
image's foreground (Otsu, :func:`uda_core.io.intensity.foreground_mask` of the whole stack)
covers at least ``min_fraction`` of it.

Slices are (Z, X, Y): one axial slice per row, X the rows (H) and Y the columns (W) of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uda_core.grid.model_grid import ModelGrid
from uda_core.grid.prepare import ModelInput, labels_to_grid, prepare_volume
from uda_core.io import Volume
from uda_core.io.geometry import resample
from uda_core.io.intensity import foreground_mask, normalise

__all__ = ["MIN_HEAD_FRACTION", "PairOnGrid", "moving_on_model_grid", "pair_on_model_grid",
           "registration_slices"]

MIN_HEAD_FRACTION = 0.02  # slices with less head (fixed image, Otsu) are left out


@dataclass
class PairOnGrid:
    """A fixed image and another image on the fixed image's model grid (all slices).

    model_input: the fixed image on its model grid (slices (Z, X, Y) float32, grid affine).
    moving: (Z, X, Y) float32 normalised slices of the other image, or None.
    head: (Z, X, Y) bool foreground (Otsu) of the fixed slices.
    keep: (Z',) int64 indices of the slices with at least ``min_fraction`` head.
    """

    model_input: ModelInput
    moving: np.ndarray | None
    head: np.ndarray
    keep: np.ndarray


def pair_on_model_grid(fixed: Volume, moving: Volume | None, grid=None,
                       min_fraction: float = MIN_HEAD_FRACTION) -> PairOnGrid:
    """``fixed`` and ``moving`` (or None) on ``fixed``'s model grid; see the module doc.

    ``grid``: anything :meth:`ModelGrid.of` reads (a ModelGrid, a bundle, a config, a mapping;
    None: the default 2 mm, 96 x 112 grid).
    """
    grid = ModelGrid.of(grid)
    model_input = prepare_volume(fixed, grid.spacing_mm, grid.in_plane_shape,
                                 grid.normalisation)
    head = foreground_mask(model_input.slices)
    keep = np.flatnonzero(head.reshape(head.shape[0], -1).mean(axis=1) >= min_fraction)
    other = None if moving is None else moving_on_model_grid(moving, model_input, grid)
    return PairOnGrid(model_input=model_input, moving=other, head=head, keep=keep)


def moving_on_model_grid(moving: Volume, model_input: ModelInput, grid=None) -> np.ndarray:
    """``moving`` resampled onto the model grid of ``model_input`` through world coordinates
    (trilinear, outside: its minimum) and normalised: (Z, X, Y) float32."""
    grid = ModelGrid.of(grid)
    on_grid = resample(moving.data, moving.affine, model_input.grid_affine,
                       model_input.grid_shape, order=1, fill=float(np.min(moving.data)))
    return normalise(np.moveaxis(on_grid, 2, 0), grid.normalisation).astype(np.float32)


def registration_slices(volume_t1: Volume, volume_other: Volume | None = None, grid=None, *,
                        labels: Volume | None = None,
                        min_fraction: float = MIN_HEAD_FRACTION):
    """Axial head slices of a subject's images on a model grid, for registration pairs.

    Args:
        volume_t1: the fixed modality's volume.
        volume_other: the other modality of the same subject, any grid, or None.
        grid: where the model grid comes from (:meth:`ModelGrid.of`): a ModelGrid, any object
            with attributes, or a mapping with keys, ``spacing_mm`` (x, y, z mm),
            ``in_plane_shape`` (X, Y voxels) and ``normalisation`` (e.g. a ModelBundle or
            SourceTrainingConfig); None: 2 mm, 96 x 112, the default normalisation.
        labels: a label map of `volume_t1`'s subject (any grid), or None.
        min_fraction: least share of head pixels for a slice to be kept (0 keeps all).

    Returns:
        (fixed_slices, other_slices): (Z', X, Y) float32 each, other_slices None without
        `volume_other`; with `labels`, a third item (Z', X, Y) int64 (nearest neighbour).
        Slices with less head than `min_fraction` are dropped in all outputs alike.
    """
    pair = pair_on_model_grid(volume_t1, volume_other, grid, min_fraction)
    keep = pair.keep
    fixed = np.ascontiguousarray(pair.model_input.slices[keep], dtype=np.float32)
    other = None if pair.moving is None else np.ascontiguousarray(pair.moving[keep],
                                                                  dtype=np.float32)
    if labels is None:
        return fixed, other
    return fixed, other, np.ascontiguousarray(labels_to_grid(labels, pair.model_input)[keep])
