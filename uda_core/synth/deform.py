"""Random smooth deformations that turn the template into new "subjects".

A deformation maps a point x of the subject (RAS world mm) to the template point it shows:
    phi(x) = c + M (x - c) + t + u(x)
with M a small rotation times an anisotropic scaling, c the centre of the brain, t a small
translation and u a smooth random displacement (mm) stored on a coarse lattice and
interpolated trilinearly. Warping samples the template at phi(x) (pull-back), so no holes
appear; det(d phi / dx) is kept well above 0 (no folding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

_CHUNK_VOXELS = 2_000_000  # points per grid_sample call (bounds memory to ~100 MB)


def grid_points(affine: np.ndarray, shape, axis0: slice | None = None) -> torch.Tensor:
    """World coordinates (mm) of voxel centres: float32 tensor (X', Y, Z, 3).

    `axis0` restricts the first axis to a slice (for chunked processing).
    """
    affine = np.asarray(affine, dtype=np.float64)
    rng0 = range(shape[0])[axis0] if axis0 is not None else range(shape[0])
    idx = [
        torch.arange(rng0.start, rng0.stop, dtype=torch.float64),
        torch.arange(shape[1], dtype=torch.float64),
        torch.arange(shape[2], dtype=torch.float64),
    ]
    a = torch.from_numpy(affine)
    pts = (
        idx[0][:, None, None, None] * a[:3, 0]
        + idx[1][None, :, None, None] * a[:3, 1]
        + idx[2][None, None, :, None] * a[:3, 2]
        + a[:3, 3]
    )
    return pts.to(torch.float32)


def sample_at(data: torch.Tensor, affine: np.ndarray, points: torch.Tensor,
              padding_mode: str = "zeros") -> torch.Tensor:
    """Trilinear interpolation of `data` at world points.

    Args:
        data: (C, X, Y, Z) float32 tensor on the grid `affine` (voxel -> RAS mm).
        points: (..., 3) world mm (any leading shape).
        padding_mode: "zeros" (0 outside the grid) or "border".

    Returns:
        (C, ...) float32 tensor.
    """
    lead = points.shape[:-1]
    inv = torch.from_numpy(np.linalg.inv(np.asarray(affine, dtype=np.float64))).to(torch.float32)
    size = torch.tensor(data.shape[1:], dtype=torch.float32)
    flat = points.reshape(-1, 3)
    out = torch.empty((data.shape[0], flat.shape[0]), dtype=torch.float32)
    src = data[None]
    for start in range(0, flat.shape[0], _CHUNK_VOXELS):
        p = flat[start:start + _CHUNK_VOXELS]
        ijk = p @ inv[:3, :3].T + inv[:3, 3]
        # align_corners=True: index 0 -> -1, index n-1 -> +1;
        # the grid's last dim is ordered (W, H, D) = (Z, Y, X)
        norm = 2.0 * ijk / torch.clamp(size - 1.0, min=1.0) - 1.0
        grid = norm.flip(-1).reshape(1, 1, 1, -1, 3)
        res = F.grid_sample(src, grid, mode="bilinear", padding_mode=padding_mode,
                            align_corners=True)
        out[:, start:start + p.shape[0]] = res.reshape(data.shape[0], -1)
    return out.reshape((data.shape[0],) + tuple(lead))


def _rotation(angles_rad) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Deformation:
    """phi: subject world (RAS mm) -> template world (RAS mm), phi(x) = A x + u(x).

    Attributes:
        affine: 4x4 global part A (rotation, scaling, translation about the brain centre).
        displacement: (3, I, J, K) float32 displacement u in mm (RAS components) at the
            nodes of a coarse lattice; trilinear in between, constant-extended outside.
        lattice_affine: 4x4 voxel -> RAS mm of that lattice.
    """

    affine: np.ndarray
    displacement: np.ndarray
    lattice_affine: np.ndarray

    def map_points(self, points: torch.Tensor) -> torch.Tensor:
        """phi at world points (..., 3) mm -> template world points (..., 3) mm (float32)."""
        a = torch.from_numpy(np.asarray(self.affine, dtype=np.float32))
        u = sample_at(torch.from_numpy(self.displacement), self.lattice_affine, points,
                      padding_mode="border")
        return points @ a[:3, :3].T + a[:3, 3] + torch.movedim(u, 0, -1)

    def template_points(self, grid_affine: np.ndarray, grid_shape) -> np.ndarray:
        """phi at every voxel centre of a grid: float32 array (X, Y, Z, 3), template mm."""
        return self.map_points(grid_points(grid_affine, grid_shape)).numpy()

    def jacobian_determinant(self, grid_affine: np.ndarray, grid_shape) -> np.ndarray:
        """det(d phi / dx) at the voxel centres of a grid: (X, Y, Z) float32, by the forward
        differences of :func:`~uda_core.spatial.jacobian_3d.jacobian_determinant_mm` (of the
        displacement phi(x) - x)."""
        from uda_core.spatial.jacobian_3d import jacobian_determinant_mm

        world = grid_points(grid_affine, grid_shape).numpy()
        return jacobian_determinant_mm(self.template_points(grid_affine, grid_shape) - world,
                                       grid_affine)

    def warp(self, data: torch.Tensor, data_affine: np.ndarray, grid_affine: np.ndarray,
             grid_shape) -> torch.Tensor:
        """Resample template-space `data` (C, X, Y, Z) onto a subject grid (trilinear).

        Returns a (C, *grid_shape) float32 tensor; 0 where phi leaves the data's grid.
        Processed in slabs along the first axis to bound memory.
        """
        out = torch.empty((data.shape[0],) + tuple(grid_shape), dtype=torch.float32)
        step = max(1, _CHUNK_VOXELS // int(grid_shape[1] * grid_shape[2]))
        for start in range(0, grid_shape[0], step):
            sl = slice(start, min(start + step, grid_shape[0]))
            pts = self.map_points(grid_points(grid_affine, grid_shape, sl))
            out[:, sl] = sample_at(data, data_affine, pts)
        return out


def _smooth_noise(shape, sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise smoothed by a Gaussian of `sigma_vox`, rescaled to std 1."""
    field = gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    return field / max(field.std(), 1e-12)


def lattice_for(grid_affine: np.ndarray, grid_shape, spacing_mm: float):
    """A coarse lattice spanning the grid's corner voxel centres, nodes <= spacing_mm apart.

    Returns (lattice_affine 4x4, lattice_shape (3 ints)).
    """
    grid_affine = np.asarray(grid_affine, dtype=np.float64)
    voxel = np.linalg.norm(grid_affine[:3, :3], axis=0)
    extent = (np.asarray(grid_shape) - 1) * voxel
    n = np.maximum(np.ceil(extent / spacing_mm).astype(int) + 1, 2)
    scale = (np.asarray(grid_shape) - 1) / (n - 1)
    return grid_affine @ np.diag(np.append(scale, 1.0)), tuple(int(v) for v in n)


def random_deformation(
    grid_affine: np.ndarray,
    grid_shape,
    rng: np.random.Generator,
    *,
    max_rotation_deg: float = 4.0,
    max_scaling: float = 0.05,
    max_translation_mm: float = 2.0,
    scales_mm=((24.0, 3.0), (10.0, 1.5)),
    lattice_mm: float = 4.0,
    min_jacobian: float = 0.5,
) -> Deformation:
    """A random smooth deformation of the space covered by a grid.

    Args:
        grid_affine, grid_shape: the subject grid (voxel -> RAS mm); its centre is the
            centre of rotation and scaling, and the displacement lattice covers it.
        rng: numpy Generator (all randomness comes from it).
        max_rotation_deg: rotation about each axis, uniform in +-this.
        max_scaling: scaling per axis, uniform in 1 +- this.
        max_translation_mm: translation per axis, uniform in +- this.
        scales_mm: (smoothing sigma mm, RMS amplitude mm) of each displacement component
            (Gaussian-smoothed white noise, summed over the scales).
        lattice_mm: node spacing of the displacement lattice (mm).
        min_jacobian: the displacement is shrunk (x0.8 until) det(d phi/dx) >= this on the
            lattice, so the map does not fold.
    """
    grid_affine = np.asarray(grid_affine, dtype=np.float64)
    centre = grid_affine @ np.append((np.asarray(grid_shape) - 1) / 2.0, 1.0)
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    scaling = rng.uniform(1.0 - max_scaling, 1.0 + max_scaling, 3)
    translation = rng.uniform(-max_translation_mm, max_translation_mm, 3)
    linear = _rotation(angles) @ np.diag(scaling)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre[:3] - linear @ centre[:3] + translation

    lat_affine, lat_shape = lattice_for(grid_affine, grid_shape, lattice_mm)
    lat_voxel = np.linalg.norm(lat_affine[:3, :3], axis=0)
    disp = np.zeros((3,) + lat_shape, dtype=np.float64)
    for sigma_mm, rms_mm in scales_mm:
        for c in range(3):
            disp[c] += rms_mm * _smooth_noise(lat_shape, sigma_mm / lat_voxel, rng)

    inv_lat = np.linalg.inv(lat_affine[:3, :3])
    for _ in range(20):
        grads = np.stack([np.stack(np.gradient(disp[c]), axis=-1) for c in range(3)], -2)
        jac = linear + grads @ inv_lat
        if np.linalg.det(jac).min() >= min_jacobian:
            break
        disp *= 0.8
    return Deformation(affine=affine, displacement=disp.astype(np.float32),
                       lattice_affine=lat_affine)
