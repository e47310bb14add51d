"""Pictures of a registration, as plain numpy: overlays, the deformation, folds.

Everything here works on arrays on one voxel grid (the fixed image's, (X, Y, Z)) and its
4x4 affine (voxel indices -> RAS+ mm). The displacement field is the one
:func:`~uda_core.runs.register.register_volumes` returns: ``field_mm`` (X, Y, Z, 3),
a pull field in RAS mm, ``warped(p) = moving(p + u(p))``. Geometry comes back in RAS mm; a
viewer converts it to its own world axes (the app does so with ``app.layers.world_from_ras``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["blend", "checkerboard", "deformation_grid_lines", "displacement_arrows",
           "fold_mask", "robust_unit", "slice_axis"]


def robust_unit(image: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """``image`` mapped linearly to 0..1 (float32) between two percentiles, then clipped.

    Percentiles of the finite voxels; a flat image gives zeros. NaN/inf become 0.
    """
    data = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.float32)
    low, high = np.percentile(data[finite], [low_pct, high_pct])
    if not high > low:
        return np.zeros(data.shape, np.float32)
    unit = (np.where(finite, data, low) - low) / (high - low)
    return np.clip(unit, 0.0, 1.0).astype(np.float32)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"images must share one grid, got shapes {np.shape(a)} and "
                         f"{np.shape(b)}")


def checkerboard(a: np.ndarray, b: np.ndarray, tile_vox: int = 8,
                 axes: Iterable[int] = (0, 1)) -> np.ndarray:
    """Tiles of ``a`` and ``b`` alternating like a chessboard, each rescaled by
    :func:`robust_unit` first so two contrasts (T1, T2) are comparable.

    Args:
        a, b: images on one grid, e.g. (X, Y, Z).
        tile_vox: tile edge in voxels (>= 1).
        axes: array axes along which tiles alternate; along the others every tile is a
            column (axes (0, 1) of an axial (X, Y, Z) grid: the same pattern on every slice).

    Returns:
        float32 array of the same shape, values 0..1: ``a`` where the tile parity is even
        (the tile holding voxel 0), ``b`` where odd.
    """
    _check_pair(a, b)
    if int(tile_vox) < 1:
        raise ValueError(f"tile_vox must be >= 1, got {tile_vox}")
    shape = np.shape(a)
    parity = np.zeros(shape, dtype=np.int64)
    for axis in axes:
        index = np.arange(shape[axis]) // int(tile_vox)
        parity = parity + index.reshape([-1 if d == axis else 1 for d in range(len(shape))])
    return np.where(parity % 2 == 0, robust_unit(a), robust_unit(b)).astype(np.float32)


def blend(a: np.ndarray, b: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(1 - alpha) * a + alpha * b after :func:`robust_unit`: float32, values 0..1."""
    _check_pair(a, b)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    return ((1.0 - alpha) * robust_unit(a) + alpha * robust_unit(b)).astype(np.float32)


def fold_mask(jacobian: np.ndarray) -> np.ndarray:
    """uint8 mask, 1 where the Jacobian determinant is <= 0 (folded or collapsed), else 0."""
    return (np.asarray(jacobian) <= 0).astype(np.uint8)


def slice_axis(affine: np.ndarray) -> int:
    """The array axis that runs closest to RAS S (the axial slice axis of the grid)."""
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    directions = linear / np.linalg.norm(linear, axis=0, keepdims=True)
    return int(np.argmax(np.abs(directions[2])))


def _check_field(field_mm: np.ndarray, affine: np.ndarray) -> np.ndarray:
    field = np.asarray(field_mm, dtype=np.float64)
    if field.ndim != 4 or field.shape[-1] != 3:
        raise ValueError(f"field_mm must be (X, Y, Z, 3), got shape {field.shape}")
    if np.shape(affine) != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {np.shape(affine)}")
    return field


def _ras(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Voxel indices (..., 3) -> RAS mm (..., 3)."""
    affine = np.asarray(affine, dtype=np.float64)
    return index @ affine[:3, :3].T + affine[:3, 3]


def displacement_arrows(field_mm: np.ndarray, affine: np.ndarray, step_vox=4,
                        min_mm: float = 0.2, mask: np.ndarray | None = None) -> np.ndarray:
    """The field sampled on a sparse voxel lattice, as arrows.

    Args:
        field_mm: (X, Y, Z, 3) displacement in RAS mm on the grid of ``affine``.
        affine: 4x4 voxel indices -> RAS mm.
        step_vox: lattice step in voxels, one int for all axes or three (e.g. (4, 4, 1):
            sparse in-plane, every slice). Along each axis the lattice starts at step // 2
            (the middle voxel for an axis shorter than that).
        min_mm: arrows shorter than this (mm) are left out (the still background).
        mask: optional (X, Y, Z) booleans: arrows only start where it is True (e.g. the
            head, so the background's meaningless motion is not drawn).

    Returns:
        (N, 2, 3) float64: ``[n, 0]`` the arrow's start (a voxel centre) in RAS mm,
        ``[n, 1]`` its vector u in RAS mm (it points to where that voxel's content was in
        the moving image).
    """
    field = _check_field(field_mm, affine)
    steps = np.broadcast_to(np.asarray(step_vox, dtype=int), (3,))
    if (steps < 1).any():
        raise ValueError(f"step_vox must be >= 1, got {step_vox}")
    axes = [np.arange(min(s // 2, (n - 1) // 2), n, s)
            for n, s in zip(field.shape[:3], steps, strict=True)]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    vectors = field[index[:, 0], index[:, 1], index[:, 2]]
    keep = np.linalg.norm(vectors, axis=1) >= min_mm
    if mask is not None:
        if np.shape(mask) != field.shape[:3]:
            raise ValueError(f"mask must be {field.shape[:3]}, got shape {np.shape(mask)}")
        keep &= np.asarray(mask, dtype=bool)[index[:, 0], index[:, 1], index[:, 2]]
    starts = _ras(affine, index[keep].astype(np.float64))
    return np.stack([starts, vectors[keep]], axis=1)


def deformation_grid_lines(field_mm: np.ndarray, affine: np.ndarray, spacing_vox: int = 4,
                           slice_index=None) -> list[np.ndarray]:
    """A regular grid of in-plane lines moved by the field: each point p drawn at p + u(p).

    The grid lies in the slices of the axis closest to RAS S (:func:`slice_axis`); its lines
    run along the two other array axes, ``spacing_vox`` voxels apart (starting at
    spacing_vox // 2), through every voxel centre of that line. A zero field gives straight
    lines along the voxel axes.

    Args:
        field_mm: (X, Y, Z, 3) displacement in RAS mm on the grid of ``affine``.
        affine: 4x4 voxel indices -> RAS mm.
        spacing_vox: distance between neighbouring lines, voxels (>= 1).
        slice_index: one slice index, a sequence of them, or None for every slice.

    Returns:
        a list of polylines, each an (K, 3) float64 array of RAS mm points (K >= 2), for a
        path-shapes layer; lines of a slice axis shorter than 2 voxels are left out.
    """
    field = _check_field(field_mm, affine)
    if int(spacing_vox) < 1:
        raise ValueError(f"spacing_vox must be >= 1, got {spacing_vox}")
    axis = slice_axis(affine)
    size = field.shape[axis]
    slices = range(size) if slice_index is None else np.atleast_1d(slice_index).astype(int)
    in_plane = [a for a in range(3) if a != axis]
    lines: list[np.ndarray] = []
    for k in slices:
        if not 0 <= k < size:
            raise ValueError(f"slice_index {k} is outside 0..{size - 1}")
        for along, across in (in_plane, in_plane[::-1]):
            length = field.shape[along]
            if length < 2:
                continue
            for position in range(int(spacing_vox) // 2, field.shape[across], int(spacing_vox)):
                index = np.zeros((length, 3), dtype=np.int64)
                index[:, along] = np.arange(length)
                index[:, across] = position
                index[:, axis] = k
                moved = field[index[:, 0], index[:, 1], index[:, 2]]
                lines.append(_ras(affine, index.astype(np.float64)) + moved)
    return lines
