"""MIND-SSC descriptors of 2D images: a contrast-invariant local structure code.

Heinrich et al., "MRF-based deformable registration and ventilation estimation of lung CT"
(MICCAI 2013) and "MIND" (MedIA 2012); the 3D self-similarity context (SSC) compares pairs
of the six neighbours of a voxel. The 2D version here (our reduction of it) uses the four
neighbours n0..n3 at +-``dilation`` pixels along rows and columns and compares the six pairs
among them (the four adjacent pairs at distance sqrt(2) d and the two opposite pairs at 2 d):

    D_p(x) = G_sigma * (I(x + a_p) - I(x + b_p)) ** 2         p = 1..6
    V(x)   = mean_p D_p(x), clamped to [1e-3, 1e3] x its image mean
    MIND_p(x) = exp(-D_p(x) / V(x))

Each channel lies in (0, 1]; a uniform region gives 1 everywhere. The descriptors depend on
local intensity *differences* relative to their own local variance, not on the intensities,
so T1-, T2- and PD-weighted images of one anatomy give similar codes; their squared
difference is the data term of :mod:`uda_core.models.instance_optimisation`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from uda_core.spatial.warp import gaussian_smooth, gaussian_smooth_axis

__all__ = ["MIND_CHANNELS", "MIND_CHANNELS_3D", "mind_ssc", "mind_ssc_3d"]

_PAIRS = ((0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3))
MIND_CHANNELS = len(_PAIRS)


def mind_ssc(image: Tensor, dilation: int = 1, sigma_px: float = 0.8) -> Tensor:
    """MIND-SSC of ``image`` (B, 1, H, W): (B, 6, H, W) descriptors in (0, 1].

    ``dilation``: neighbour distance in pixels; ``sigma_px``: Gaussian sigma (pixels) of the
    patch distance (0 = none). Edges are replicated.
    """
    if image.dim() != 4 or image.shape[1] != 1:
        raise ValueError(f"image must be (B, 1, H, W), got {tuple(image.shape)}")
    if int(dilation) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    d = int(dilation)
    height, width = image.shape[-2:]
    padded = F.pad(image, (d, d, d, d), mode="replicate")

    def shifted(dy: int, dx: int) -> Tensor:
        return padded[..., d + dy:d + dy + height, d + dx:d + dx + width]

    neighbours = [shifted(0, d), shifted(d, 0), shifted(0, -d), shifted(-d, 0)]
    distance = torch.cat([(neighbours[a] - neighbours[b]).square() for a, b in _PAIRS], 1)
    return _descriptors(gaussian_smooth(distance, sigma_px))


def _descriptors(distance: Tensor) -> Tensor:
    """exp(-D / V) of smoothed patch distances D (B, P, ...): V the mean over the P pairs,
    clamped to [1e-3, 1e3] x its mean over each image."""
    variance = distance.mean(1, keepdim=True)
    mean = variance.mean(dim=tuple(range(1, variance.dim())), keepdim=True).clamp_min(1e-12)
    variance = torch.maximum(torch.minimum(variance, mean * 1000.0), mean * 0.001)
    return torch.exp(-distance / variance)


# the six neighbours (+-d along each of the three axes) and the twelve pairs of them that are
# not opposite (3D MIND-SSC: each pair at distance sqrt(2) d)
_OFFSETS_3D = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
_PAIRS_3D = tuple((a, b) for a in range(6) for b in range(a + 1, 6) if b != a + 1 or a % 2)
MIND_CHANNELS_3D = len(_PAIRS_3D)


def mind_ssc_3d(volume: Tensor, dilation: int = 1, sigma_px: float = 0.8) -> Tensor:
    """3D MIND-SSC of ``volume`` (B, 1, D, H, W): (B, 12, D, H, W) descriptors in (0, 1].

    Heinrich's self-similarity context: the squared differences of the twelve non-opposite
    pairs of a voxel's six neighbours at +-``dilation`` voxels, Gaussian-smoothed
    (``sigma_px`` voxels, separable, edges replicated), divided by their mean over the
    twelve (clamped to [1e-3, 1e3] x its volume mean) and passed through exp(-x).
    """
    if volume.dim() != 5 or volume.shape[1] != 1:
        raise ValueError(f"volume must be (B, 1, D, H, W), got {tuple(volume.shape)}")
    if int(dilation) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    d = int(dilation)
    size = volume.shape[-3:]
    padded = F.pad(volume, (d,) * 6, mode="replicate")

    def shifted(offset: tuple[int, int, int]) -> Tensor:
        (a, b, c) = (d + d * o for o in offset)
        return padded[..., a:a + size[0], b:b + size[1], c:c + size[2]]

    neighbours = [shifted(o) for o in _OFFSETS_3D]
    distance = torch.cat([(neighbours[a] - neighbours[b]).square() for a, b in _PAIRS_3D], 1)
    for axis in (2, 3, 4):
        distance = gaussian_smooth_axis(distance, sigma_px, axis)
    return _descriptors(distance)
