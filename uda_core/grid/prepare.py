"""From a user's volume to the network's slices, and from the network's output back.

The model grid is RAS-aligned with the model's voxel size (e.g. 2 mm), a fixed in-plane size
(e.g. 96 x 112 voxels) centred on the head, and covers the whole volume along z (axial
slices). Resampling to it undoes any orientation, obliquity and anisotropy of the input in one
interpolation; results are mapped back with the inverse transform onto the input's own grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uda_core.io import Volume
from uda_core.io.bias_field import N4, correct_bias_field
from uda_core.io.geometry import covering_grid, foreground_center, model_grid, resample
from uda_core.io.intensity import foreground_mask, normalise


@dataclass
class ModelInput:
    """One volume on the model grid, ready for a 2D network.

    slices: (Z, X, Y) float32 normalised intensities, one axial slice per row.
    grid_affine: 4x4 voxel -> RAS mm of the model grid, whose array order is (X, Y, Z).
    grid_shape: (X, Y, Z) of the model grid.
    positions: (Z,) normalised position of each slice within the head's axial extent
        (0 = lowest slice showing head, 1 = highest; clipped to 0..1 outside it).
    """

    slices: np.ndarray
    grid_affine: np.ndarray
    grid_shape: tuple[int, int, int]
    positions: np.ndarray


def slice_positions(foreground: np.ndarray, min_fraction: float = 0.005) -> np.ndarray:
    """Normalised axial positions (Z,) from a foreground mask (Z, X, Y): see ModelInput."""
    per_slice = foreground.reshape(foreground.shape[0], -1).mean(axis=1)
    inside = np.flatnonzero(per_slice > min_fraction)
    z = np.arange(foreground.shape[0], dtype=np.float32)
    if inside.size < 2:
        return np.full_like(z, 0.5)
    lo, hi = float(inside[0]), float(inside[-1])
    return np.clip((z - lo) / (hi - lo), 0.0, 1.0)


def prepare_volume(volume: Volume, spacing_mm, in_plane_shape, normalisation: dict) -> ModelInput:
    """Resample `volume` onto its model grid and normalise intensities as the model expects."""
    center = foreground_center(volume)
    grid_affine, grid_shape = model_grid(volume.affine, volume.shape, spacing_mm,
                                         in_plane_shape, center)
    fill = float(np.min(volume.data))
    on_grid = resample(volume.data, volume.affine, grid_affine, grid_shape, order=1, fill=fill)
    slices = np.ascontiguousarray(np.moveaxis(on_grid, 2, 0))  # (Z, X, Y)
    foreground = foreground_mask(slices)
    positions = slice_positions(foreground)
    slices = _normalised(slices, foreground, spacing_mm, normalisation)
    nx, ny, nz = (int(s) for s in grid_shape)
    return ModelInput(slices, grid_affine, (nx, ny, nz), positions)


def prepare_volume_3d(volume: Volume, spacing_mm, normalisation: dict) -> ModelInput:
    """Like prepare_volume for a 3D network: the grid covers the whole volume on all three
    axes (:func:`uda_core.io.geometry.covering_grid`) instead of a fixed in-plane size; the
    volume is still stored as slices (Z, X, Y) (``np.moveaxis(slices, 0, -1)`` is (X, Y, Z))."""
    grid_affine, grid_shape = covering_grid(volume.affine, volume.shape, spacing_mm)
    fill = float(np.min(volume.data))
    on_grid = resample(volume.data, volume.affine, grid_affine, grid_shape, order=1, fill=fill)
    slices = np.ascontiguousarray(np.moveaxis(on_grid, 2, 0))
    foreground = foreground_mask(slices)
    positions = slice_positions(foreground)
    slices = _normalised(slices, foreground, spacing_mm, normalisation)
    return ModelInput(slices, grid_affine, grid_shape, positions)


def _normalised(slices: np.ndarray, foreground: np.ndarray, spacing_mm,
                normalisation: dict) -> np.ndarray:
    """Model-grid slices (Z, X, Y) normalised by the bundle's spec, after N4 bias-field
    correction inside `foreground` (their Otsu head mask) when the spec asks for it
    (``"bias_field": "n4"``, a standardised bundle: uda_core.models.standardise).
    `spacing_mm`: the grid's (x, y, z) voxel size."""
    if normalisation.get("bias_field") == N4:
        sx, sy, sz = (float(s) for s in spacing_mm)
        slices = correct_bias_field(slices, (sz, sx, sy), foreground)
    return normalise(slices, normalisation).astype(np.float32, copy=False)


def labels_to_grid(labels: Volume, model_input: ModelInput) -> np.ndarray:
    """A label map resampled (nearest neighbour) onto the model grid, as (Z, X, Y) int64."""
    on_grid = resample(labels.data.astype(np.float32), labels.affine, model_input.grid_affine,
                       model_input.grid_shape, order=0, fill=0.0)
    return np.moveaxis(np.rint(on_grid).astype(np.int64), 2, 0)


def probabilities_to_input_grid(probs: np.ndarray, model_input: ModelInput,
                                volume: Volume) -> np.ndarray:
    """Class probabilities (C, Z, X, Y) on the model grid -> (C, *volume.shape) on the input grid.

    Linear interpolation of the probabilities, so the label map taken from them by argmax has
    smooth boundaries on a finer input grid. Outside the model grid every class gets 0, so the
    argmax there is class 0 (background).
    """
    on_grid = np.moveaxis(probs, 1, -1)  # (C, X, Y, Z)
    return resample(on_grid, model_input.grid_affine, volume.affine, volume.shape,
                    order=1, fill=0.0)
