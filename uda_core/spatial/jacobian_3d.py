"""The Jacobian determinant of a whole-volume displacement field in world millimetres.

A field u (X, Y, Z, 3) in RAS mm at the voxel centres of a grid with affine A defines the map
phi(p) = p + u(p) (world mm to world mm; warped(p) = moving(phi(p))). Its Jacobian is
I + du/dx with du/dx = (du / d index) @ inv(A[:3, :3]); the derivatives along the voxel
axes are numpy's central differences (one-sided at the volume's faces). det = 1: no volume
change, > 1: the moving image is read from a larger region (it shrinks onto the fixed
grid), <= 0: the map folds.

Computed in slabs along X (each with one neighbouring plane on either side), so a 1 mm head
needs a few tens of MB beyond the field; the result equals the whole-volume computation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["jacobian_determinant_mm"]


def jacobian_determinant_mm(field_mm: np.ndarray, affine: np.ndarray,
                            slab: int = 16) -> np.ndarray:
    """det(d phi / d x) of phi(p) = p + u(p) at every voxel: (X, Y, Z) float32.

    ``field_mm`` (X, Y, Z, 3) displacements in world mm; ``affine`` (4, 4) voxel -> world of
    its grid; ``slab``: X planes per chunk (memory only; the numbers do not depend on it).
    """
    field_mm = np.asarray(field_mm)
    if field_mm.ndim != 4 or field_mm.shape[-1] != 3:
        raise ValueError(f"field_mm must be (X, Y, Z, 3), got shape {field_mm.shape}")
    if min(field_mm.shape[:3]) < 2:
        raise ValueError(f"need at least 2 voxels along each axis, got {field_mm.shape[:3]}")
    to_index = np.linalg.inv(np.asarray(affine, np.float64)[:3, :3])   # d index / d x
    size = field_mm.shape[0]
    out = np.empty(field_mm.shape[:3], np.float32)
    for start in range(0, size, max(1, int(slab))):
        stop = min(start + max(1, int(slab)), size)
        lo, hi = max(start - 1, 0), min(stop + 1, size)
        chunk = np.asarray(field_mm[lo:hi], np.float64)
        # (..., 3 components, 3 index axes): d u_c / d index_a; along X the slab's own
        # neighbours give the whole volume's central differences (one-sided at its faces)
        d_index = np.stack([np.gradient(chunk, axis=a) for a in (0, 1, 2)], axis=-1)
        inner = slice(start - lo, start - lo + (stop - start))
        jac = d_index[inner] @ to_index + np.eye(3)                   # (..., 3, 3)
        out[start:stop] = _det3(jac)
    return out


def _det3(m: np.ndarray) -> np.ndarray:
    """Determinants of (..., 3, 3) matrices by the rule of Sarrus (2x faster than
    np.linalg.det's LU for millions of small matrices)."""
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
