"""A 3D instance optimisation of a whole-volume registration result (ConvexAdam-style).

The slice-wise registration of :mod:`uda_core.runs.register` moves tissue within axial
slices only; two subjects' anatomies also differ through the plane. This step refines the
result in 3D: given the fixed volume F and the moving volume already warped by the current
field (W = M(p + u(p)) on F's grid), Adam finds a residual field r (voxels of F's grid) that
minimises

    E(r) = mean_x,p (MIND_p[F](x) - MIND_p[W](x + r(x))) ** 2  +  smooth_weight * R(r)

with :func:`~uda_core.spatial.mind.mind_ssc_3d` descriptors (contrast-invariant) and R the
mean squared difference of neighbouring control points (a diffusion regulariser). r lives on
a control grid every ``stride`` voxels of a working grid of about ``working_mm`` (both
volumes are box-averaged onto it; a 1 mm head is worked on at 2 mm), trilinearly upsampled.
The refined field is ``u'(p) = r_mm(p) + u(p + r(p))`` (:func:`compose_residual`): the moving
image is still sampled once, through u'.

Chosen on the validation pair of demo subjects 40 <- 41 (T1 <- T2, 2 mm; BENCHMARKS.md,
"Session 8"): smooth_weight 0.02 / 0.01 / 0.005 / 0 gave warped-label Dice 0.766 / - / 0.768
/ 0.732 from the slice-wise 0.696; 100 iterations instead of 50 gained 0.002.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from uda_core.spatial.mind import mind_ssc_3d

__all__ = ["VolumeRefinement", "compose_residual", "refine_residual"]


@dataclass(frozen=True)
class VolumeRefinement:
    """Settings of the 3D refinement (validation subjects only, see the module doc).

    iterations: Adam steps. lr: Adam's learning rate, voxels of the working grid per step.
    smooth_weight: weight of R(r). stride: control-point spacing, working-grid voxels.
    working_mm: the working grid's voxel size (integer box-averaging factors of the input's).
    """

    iterations: int = 50
    lr: float = 0.5
    smooth_weight: float = 0.01
    stride: int = 2
    working_mm: float = 2.0

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or self.smooth_weight < 0 or self.stride < 1:
            raise ValueError(f"need iterations >= 0, lr > 0, smooth_weight >= 0, stride >= 1; "
                             f"got {self}")
        if self.working_mm <= 0:
            raise ValueError(f"working_mm must be > 0, got {self.working_mm}")


def _normalised(volume: np.ndarray) -> torch.Tensor:
    """(1, 1, X, Y, Z) float32 in [0, 1]: clipped to the 0.5th-99.5th percentiles of the
    voxels above the volume's median (the head). Not io.intensity.normalise (clipped to the
    percentiles of the Otsu foreground): on the validation pairs 40-42 that lowered the 3D
    refinement's T1 <- T2 Dice by 0.02-0.03 (0.757 / 0.797 / 0.759 vs 0.779 / 0.816 / 0.786)
    and left T1 <- PD level (BENCHMARKS.md, "Session 8")."""
    data = np.nan_to_num(np.asarray(volume, dtype=np.float32))
    head = data[data > np.median(data)]
    low, high = np.percentile(head, [0.5, 99.5]) if head.size else (0.0, 1.0)
    scaled = np.clip((data - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return torch.from_numpy(scaled.astype(np.float32))[None, None]


def refine_residual(fixed: np.ndarray, warped: np.ndarray, voxel_mm: tuple[float, ...],
                    settings: VolumeRefinement = VolumeRefinement(),
                    after_step: Callable[[int], None] | None = None) -> np.ndarray:
    """The residual field r (3, X, Y, Z) float32, in voxels of ``fixed``'s grid along its three
    axes, such that ``warped(p + r(p))`` matches ``fixed`` (see the module doc).

    fixed, warped: (X, Y, Z) arrays on one grid; voxel_mm: its voxel sizes (mm);
    after_step(k): called after Adam step k = 1..iterations (progress; it may raise to stop
    the refinement, e.g. on a cancel)."""
    if fixed.shape != warped.shape or fixed.ndim != 3:
        raise ValueError(f"need two (X, Y, Z) volumes of one shape; got {fixed.shape} and "
                         f"{warped.shape}")
    shape = fixed.shape
    if settings.iterations == 0:
        return np.zeros((3, *shape), np.float32)
    factors = [max(1, int(round(settings.working_mm / float(v)))) for v in voxel_mm]
    f, w = _normalised(fixed), _normalised(warped)
    if any(k > 1 for k in factors):
        f = F.avg_pool3d(f, factors, ceil_mode=True)
        w = F.avg_pool3d(w, factors, ceil_mode=True)
    size = f.shape[-3:]
    with torch.no_grad():
        target = mind_ssc_3d(f)
        moving = mind_ssc_3d(w)
    control = torch.zeros(1, 3, *(-(-n // settings.stride) for n in size), requires_grad=True)
    optimiser = torch.optim.Adam([control], lr=settings.lr)
    axes = [torch.arange(n, dtype=torch.float32) for n in size]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]          # (1, 3, X, Y, Z)
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in size]).view(1, 3, 1, 1, 1)
    for step in range(1, settings.iterations + 1):
        dense = F.interpolate(control, size=tuple(size), mode="trilinear", align_corners=True)
        # grid_sample's grid is (x, y, z) = the LAST axis first
        grid = ((base + dense) * scale - 1.0).flip(1).permute(0, 2, 3, 4, 1)
        sampled = F.grid_sample(moving, grid, mode="bilinear", padding_mode="border",
                                align_corners=True)
        energy = (sampled - target).square().mean()
        if settings.smooth_weight:
            energy = energy + settings.smooth_weight * sum(
                control.diff(dim=axis).square().mean() for axis in (2, 3, 4))
        optimiser.zero_grad()
        energy.backward()
        optimiser.step()
        if after_step is not None:
            after_step(step)
    with torch.no_grad():
        dense = F.interpolate(control, size=tuple(size), mode="trilinear", align_corners=True)
        if any(k > 1 for k in factors):
            dense = F.interpolate(dense * torch.tensor(factors, dtype=torch.float32).view(
                1, 3, 1, 1, 1), size=tuple(shape), mode="trilinear", align_corners=False)
    return dense[0].numpy().astype(np.float32)


def compose_residual(field_mm: np.ndarray, residual: np.ndarray, affine: np.ndarray,
                     slab: int = 16) -> np.ndarray:
    """``u'(p) = r_mm(p) + u(p + r(p))``: the field that samples the moving image where the
    refined result does.

    field_mm: u, (X, Y, Z, 3) RAS mm on the fixed grid; residual: r, (3, X, Y, Z) voxels of
    that grid; affine: its voxel -> RAS mm matrix. Returns (X, Y, Z, 3) float32 RAS mm,
    computed ``slab`` slices at a time (the index grids of a 1 mm head are large)."""
    nx, ny, nz = field_mm.shape[:3]
    out = np.empty(field_mm.shape, np.float32)
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    for z0 in range(0, nz, slab):
        z1 = min(z0 + slab, nz)
        part = residual[:, :, :, z0:z1]
        index = np.stack([np.broadcast_to(ii[..., None], part.shape[1:]),
                          np.broadcast_to(jj[..., None], part.shape[1:]),
                          np.broadcast_to(np.arange(z0, z1), part.shape[1:])])
        points = (index + part).reshape(3, -1)
        moved = np.stack([map_coordinates(field_mm[..., c], points, order=1, mode="nearest")
                          for c in range(3)])                               # (3, N)
        moved += affine[:3, :3] @ part.reshape(3, -1)
        out[:, :, z0:z1] = moved.T.reshape(nx, ny, z1 - z0, 3)
    return out
