"""Voxel grids in world space: resampling between grids and the model's RAS-aligned grid.

Conventions: arrays are indexed (i, j, k) = (X, Y, Z); an affine maps voxel indices (i, j, k, 1)
to RAS+ world millimetres; voxel indices refer to voxel centres, so a grid of n voxels along an
axis covers indices -0.5 .. n - 0.5 (the voxels' boxes).
"""

from __future__ import annotations

import math

import numpy as np

from uda_core.io.intensity import foreground_mask
from uda_core.io.volume import Volume

# Points per grid_sample call: the float64 index grid of one chunk is ~24 bytes per point.
_CHUNK_POINTS = 1 << 20
# An affine map between grids counts as an exact voxel shuffle (flips, axis swaps, whole-voxel
# shifts) when it sends every destination voxel to within this many voxels of a source voxel.
_SHUFFLE_TOLERANCE = 1e-4
# Destination voxel centres this close outside the source's boxes still count as inside.
_EDGE_TOLERANCE = 1e-4


def resample(data: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape,
             *, order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Resample voxels from one grid onto another through world space.

    Args:
        data: (X, Y, Z) or (C, X, Y, Z) numpy array on the source grid (any real dtype;
            views such as np.moveaxis results are fine).
        src_affine, dst_affine: 4x4 voxel -> world (mm) affines of the two grids.
        dst_shape: (X', Y', Z') of the destination grid.
        order: 1 trilinear, 0 nearest neighbour.
        fill: value of destination voxels whose centre lies outside the source's voxel boxes
            (source indices outside -0.5 .. n - 0.5 on some axis). Inside that box but beyond
            the outermost voxel centres, the edge voxels are extended (no fading to `fill`).

    Returns:
        float32 array (X', Y', Z') or (C, X', Y', Z'). For each destination voxel v the
        value is sampled at source index inv(src_affine) @ dst_affine @ v.

    When that map is a voxel shuffle (identity, flips, axis permutations, whole-voxel shifts,
    to within 1e-4 voxel), values are copied exactly without interpolation. Otherwise
    ``torch.nn.functional.grid_sample`` (float32, align_corners=True) interpolates, a chunk of
    destination slices (last axis) at a time so that memory stays bounded.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (trilinear), got {order}")
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ValueError(f"data must be (X, Y, Z) or (C, X, Y, Z), got shape {data.shape}")
    dst_shape = tuple(int(n) for n in dst_shape)
    if len(dst_shape) != 3 or min(dst_shape) < 1:
        raise ValueError(f"dst_shape must be 3 positive sizes, got {dst_shape}")
    channels = data[None] if data.ndim == 3 else data
    src_shape = channels.shape[1:]
    if min(src_shape) < 1:
        raise ValueError(f"data has an empty axis: shape {data.shape}")
    transform = np.linalg.inv(np.asarray(src_affine, np.float64)) @ np.asarray(dst_affine,
                                                                              np.float64)
    shuffle = _voxel_shuffle(transform, dst_shape)
    if shuffle is not None:
        out = _shuffle(channels, shuffle, dst_shape, float(fill))
    else:
        out = _interpolate(channels, transform, dst_shape, order, float(fill))
    return out[0] if data.ndim == 3 else out


def model_grid(affine: np.ndarray, shape, spacing_mm, in_plane_shape,
               center_world) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The network's RAS-aligned grid for an input volume.

    Args:
        affine: 4x4 voxel -> RAS mm of the input; shape: its (X, Y, Z).
        spacing_mm: voxel size of the grid (x, y, z) in mm.
        in_plane_shape: (X', Y') voxels of the grid in the axial plane.
        center_world: (3,) RAS mm point; the grid is centred on its x and y.

    Returns:
        (grid_affine, grid_shape): grid_affine = diag(spacing) with axis 0 = +x (right),
        1 = +y (anterior), 2 = +z (superior); grid_shape = (X', Y', Z'). Along z the grid's
        voxel boxes cover the z-extent of the input's voxel boxes (all 8 corners of its
        bounding box, at indices -0.5 and n - 0.5), centred on it, with the fewest slices that
        do so.
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    if np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be positive, got {tuple(spacing)}")
    nx, ny = (int(n) for n in in_plane_shape)
    shape = tuple(int(n) for n in shape)[:3]
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5)
                        for j in (-0.5, shape[1] - 0.5) for k in (-0.5, shape[2] - 0.5)])
    z = (np.asarray(affine, dtype=np.float64) @ corners.T)[2]
    z_lo, z_hi = float(z.min()), float(z.max())
    nz = max(1, math.ceil((z_hi - z_lo) / spacing[2] - 1e-6))
    center = np.array([float(center_world[0]), float(center_world[1]), (z_lo + z_hi) / 2])
    counts = np.array([nx, ny, nz], dtype=np.float64)
    grid_affine = np.diag([*spacing, 1.0])
    grid_affine[:3, 3] = center - spacing * (counts - 1) / 2
    return grid_affine, (nx, ny, nz)


def covering_grid(affine: np.ndarray, shape, spacing_mm) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The RAS-aligned grid of ``spacing_mm`` voxels covering a whole input volume (3D models).

    Like :func:`model_grid` along z, on all three axes: the grid's voxel boxes cover the
    input's bounding box (its 8 corners at indices -0.5 and n - 0.5), centred on it, with the
    fewest voxels that do so. Returns (grid_affine, (X', Y', Z')).
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64).reshape(3)
    if np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be positive, got {tuple(spacing)}")
    shape = tuple(int(n) for n in shape)[:3]
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5)
                        for j in (-0.5, shape[1] - 0.5) for k in (-0.5, shape[2] - 0.5)])
    world = (np.asarray(affine, dtype=np.float64) @ corners.T)[:3]
    lo, hi = world.min(axis=1), world.max(axis=1)
    counts = np.maximum(1, np.ceil((hi - lo) / spacing - 1e-6)).astype(int)
    grid_affine = np.diag([*spacing, 1.0])
    grid_affine[:3, 3] = (lo + hi) / 2 - spacing * (counts - 1) / 2
    nx, ny, nz = (int(c) for c in counts)
    return grid_affine, (nx, ny, nz)


def foreground_center(volume: Volume) -> np.ndarray:
    """World (RAS mm) centroid, shape (3,), of the intensity foreground of `volume`.

    The foreground is :func:`uda_core.io.intensity.foreground_mask`; an image without one
    gives the centre of its grid.
    """
    mask = foreground_mask(volume.data)
    total = int(np.count_nonzero(mask))
    if total == 0:
        index = (np.asarray(volume.data.shape[:3], dtype=np.float64) - 1) / 2
    else:
        index = np.empty(3)
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            counts = np.count_nonzero(mask, axis=others)
            index[axis] = float(np.dot(np.arange(mask.shape[axis]), counts)) / total
    return (np.asarray(volume.affine, dtype=np.float64) @ np.append(index, 1.0))[:3]


# --- exact voxel shuffles ----------------------------------------------------------------

def _voxel_shuffle(transform: np.ndarray, dst_shape) -> tuple | None:
    """(perm, signs, offsets) if src[perm[a]] = signs[a] * dst[a] + offsets[a], else None."""
    linear = transform[:3, :3]
    snapped = np.round(linear)
    if not (np.all(np.abs(snapped).sum(axis=0) == 1) and np.all(np.abs(snapped).sum(axis=1) == 1)):
        return None
    offsets = np.round(transform[:3, 3])
    corners = np.array([[i, j, k] for i in (0, dst_shape[0] - 1) for j in (0, dst_shape[1] - 1)
                        for k in (0, dst_shape[2] - 1)], dtype=np.float64).T
    error = (linear - snapped) @ corners + (transform[:3, 3] - offsets)[:, None]
    if np.max(np.abs(error)) > _SHUFFLE_TOLERANCE:
        return None
    perm = [int(np.flatnonzero(snapped[:, a])[0]) for a in range(3)]
    signs = [int(snapped[perm[a], a]) for a in range(3)]
    return perm, signs, [int(offsets[perm[a]]) for a in range(3)]


def _shuffle(channels: np.ndarray, shuffle, dst_shape, fill: float) -> np.ndarray:
    """Copy voxels for a voxel shuffle; destination voxels with no source voxel get `fill`."""
    perm, signs, offsets = shuffle
    out = np.full((channels.shape[0], *dst_shape), fill, dtype=np.float32)
    src = channels.transpose(0, *(p + 1 for p in perm))  # axis a of src <-> dst axis a
    dst_index, src_index = [slice(None)], [slice(None)]
    for a in range(3):
        n, m, sign, offset = src.shape[a + 1], dst_shape[a], signs[a], offsets[a]
        # Destination indices v in 0..m-1 whose source index sign * v + offset is in 0..n-1.
        lo, hi = (max(0, -offset), min(m - 1, n - 1 - offset)) if sign > 0 else (
            max(0, offset - n + 1), min(m - 1, offset))
        if lo > hi:
            return out
        dst_index.append(slice(lo, hi + 1))
        if sign > 0:
            src_index.append(slice(lo + offset, hi + offset + 1))
        else:
            stop = offset - hi - 1
            src_index.append(slice(offset - lo, stop if stop >= 0 else None, -1))
    out[tuple(dst_index)] = src[tuple(src_index)]
    return out


# --- interpolation -----------------------------------------------------------------------

def _interpolate(channels: np.ndarray, transform: np.ndarray, dst_shape, order: int,
                 fill: float) -> np.ndarray:
    """grid_sample through `transform` (dst index -> src index), chunked along the last axis."""
    import torch  # here, so that reading and writing volumes never pays for importing torch
    import torch.nn.functional as F
    src_shape = np.asarray(channels.shape[1:], dtype=np.float64)
    source = torch.from_numpy(np.ascontiguousarray(channels, dtype=np.float32))[None]
    nx, ny, nz = dst_shape
    out = np.empty((channels.shape[0], nx, ny, nz), dtype=np.float32)
    # Normalised coordinate = index * scale - 1 (align_corners=True); a length-1 axis maps
    # everything to its single voxel (its extent is checked on the index instead).
    scale = np.where(src_shape > 1, 2.0 / np.maximum(src_shape - 1, 1), 0.0)
    shift = np.where(src_shape > 1, -1.0, 0.0)
    linear, offset = transform[:3, :3], transform[:3, 3]
    ii = np.arange(nx, dtype=np.float64)[:, None, None]
    jj = np.arange(ny, dtype=np.float64)[None, :, None]
    step = max(1, _CHUNK_POINTS // (nx * ny))
    mode = "bilinear" if order == 1 else "nearest"
    for k0 in range(0, nz, step):
        kk = np.arange(k0, min(nz, k0 + step), dtype=np.float64)[None, None, :]
        index = np.empty((nx, ny, kk.shape[2], 3), dtype=np.float64)
        for axis in range(3):
            index[..., axis] = (linear[axis, 0] * ii + linear[axis, 1] * jj
                                + linear[axis, 2] * kk + offset[axis])
        outside = np.any((index < -0.5 - _EDGE_TOLERANCE)
                         | (index > src_shape - 0.5 + _EDGE_TOLERANCE), axis=-1)
        grid = (index * scale + shift)[..., ::-1].astype(np.float32)  # (x, y, z) = (k, j, i)
        sampled = F.grid_sample(source, torch.from_numpy(grid)[None], mode=mode,
                                padding_mode="border", align_corners=True)
        chunk = sampled[0].numpy()
        if outside.any():
            chunk[:, outside] = fill
        out[..., k0:k0 + kk.shape[2]] = chunk
    return out
