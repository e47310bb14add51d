"""Test-time instance optimisation of a discrete registration network's displacement field.

ConvexAdam-style (Siebert, Hansen, Heinrich 2021: a discrete/convex first estimate, then a
few Adam iterations on the field): the network's expected displacement at the control points
starts the optimisation, and Adam then minimises, per pair,

    E(u) = mean_{k, c} (fF_c(k) - fM_c(k + u(k))) ** 2  +  smooth_weight * R(u)

over the control-point field u (B, 2, Kh, Kw), pixels (dy, dx). fF, fM are the network's own
generator features (B, F, Kh, Kw; unit length per cell, so the data term is the network's
matching cost, continuous in u instead of on the candidate grid); fM is sampled bilinearly at
cell index k + u / stride (border padding). R(u) is the mean squared difference of
neighbouring control points' displacements (pixels ** 2; a diffusion regulariser). The dense
field follows from :func:`~uda_core.spatial.warp.dense_from_control` with the network's own
smoothing, as in :meth:`DiscreteRegNet.forward`. The features are computed once, without
gradients; only u is optimised (the network's weights never change).

Conventions of :mod:`uda_core.spatial.warp` (pixels of the model grid, channels (dy, dx)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.spatial.warp import dense_from_control, quantise

__all__ = ["InstanceOptimisation", "RefinedRegNet", "refine_control_field"]


@dataclass(frozen=True)
class InstanceOptimisation:
    """Settings of the test-time optimisation (chosen on validation subjects 40-42 only;
    BENCHMARKS.md, "Registration (issue 13, session 5)").

    iterations: Adam steps per batch of pairs (0: the network's field as it is).
    lr: Adam learning rate, pixels per step (Adam's steps are about lr long).
    smooth_weight: weight of R(u) against the feature term.
    """

    iterations: int = 20
    lr: float = 0.3
    smooth_weight: float = 0.01

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or self.smooth_weight < 0:
            raise ValueError(f"need iterations >= 0, lr > 0, smooth_weight >= 0; got {self}")


def _sample_cells(features: Tensor, disp_cp: Tensor, stride: int) -> Tensor:
    """``features`` (B, C, Kh, Kw) read at cell k + disp_cp(k) / stride: (B, C, Kh, Kw)."""
    _, _, kh, kw = features.shape
    ys = torch.arange(kh, device=features.device, dtype=features.dtype)
    xs = torch.arange(kw, device=features.device, dtype=features.dtype)
    cell_y, cell_x = torch.meshgrid(ys, xs, indexing="ij")
    y = cell_y + disp_cp[:, 0] / stride
    x = cell_x + disp_cp[:, 1] / stride
    grid = torch.stack((x * (2.0 / max(kw - 1, 1)) - 1.0, y * (2.0 / max(kh - 1, 1)) - 1.0),
                       dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border",
                         align_corners=True)


def smoothness(disp_cp: Tensor) -> Tensor:
    """Mean squared difference of neighbouring control points' displacements (px ** 2)."""
    dy = (disp_cp[:, :, 1:] - disp_cp[:, :, :-1]).pow(2).mean()
    dx = (disp_cp[:, :, :, 1:] - disp_cp[:, :, :, :-1]).pow(2).mean()
    return dy + dx


def refine_control_field(feat_fixed: Tensor, feat_moving: Tensor, start: Tensor, stride: int,
                         settings: InstanceOptimisation) -> Tensor:
    """Adam on the control-point field (see the module doc): (B, 2, Kh, Kw) pixels."""
    field = start.detach().clone().requires_grad_(True)
    if settings.iterations == 0:
        return field.detach()
    feat_fixed, feat_moving = feat_fixed.detach(), feat_moving.detach()
    optimiser = torch.optim.Adam([field], lr=settings.lr)
    with torch.enable_grad():
        for _ in range(settings.iterations):
            optimiser.zero_grad(set_to_none=True)
            sampled = _sample_cells(feat_moving, field, stride)
            loss = (feat_fixed - sampled).pow(2).mean()
            if settings.smooth_weight:
                loss = loss + settings.smooth_weight * smoothness(field)
            loss.backward()
            optimiser.step()
    return field.detach()


class RefinedRegNet:
    """A DiscreteRegNet followed by instance optimisation, called like the network.

    ``(fixed, moving) -> dict`` with the network's outputs, except ``disp_cp`` and ``disp``
    (the refined field) and ``probs`` (one-hot of the refined field's nearest candidate, so
    the argmax accuracy scores the refined field; ``probs1``/``probs2`` stay the heads').
    """

    def __init__(self, network: DiscreteRegNet, settings: InstanceOptimisation | None = None):
        self.network = network
        self.settings = settings or InstanceOptimisation()
        self.grid, self.stride = network.grid, network.stride

    def eval(self) -> RefinedRegNet:
        self.network.eval()
        return self

    def __call__(self, fixed: Tensor, moving: Tensor) -> dict[str, Tensor]:
        net = self.network
        with torch.no_grad():
            feat_fixed, feat_moving = net.feature_maps(fixed, moving)
            out = net.from_features(feat_fixed, feat_moving, fixed.shape[-2:])
        field = refine_control_field(feat_fixed, feat_moving, out["disp_cp"], net.stride,
                                     self.settings)
        out = dict(out)
        out["disp_cp"] = field
        out["disp"] = dense_from_control(field, fixed.shape[-2:], net.stride,
                                         net.smooth_sigma_px)
        labels = quantise(field, net.grid)
        out["probs"] = F.one_hot(labels, net.grid.n_labels).permute(0, 3, 1, 2).to(field.dtype)
        return out
