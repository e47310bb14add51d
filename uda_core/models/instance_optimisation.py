"""Test-time instance optimisation of a discrete registration network's displacement field.

ConvexAdam-style (Siebert, Hansen, Heinrich 2021: a discrete/convex first estimate, then a
few Adam iterations on the field): the network's expected displacement at the control points
starts the optimisation, and Adam then minimises, per pair, over the control-point field
u (B, 2, Kh, Kw), pixels (dy, dx), one of two energies (``similarity``):

* ``"mind"`` (the default): ConvexAdam's contrast-invariant data term on the images,

      E(u) = mean_{x, p} (MIND_p[F](x) - MIND_p[M](x + U(x))) ** 2  +  smooth_weight * R(u)

  with :func:`~uda_core.spatial.mind.mind_ssc` descriptors (B, 6, H, W) of the fixed and
  moving image at full resolution and U = dense_from_control(u) the dense field (the
  network's own upsampling and smoothing, as in :meth:`DiscreteRegNet.forward`); the moving
  descriptors are warped bilinearly (:func:`~uda_core.spatial.warp.warp_image`); the mean
  runs over every ``sample_every``-th pixel along rows and columns, per pair.
* ``"features"``: the network's own matching cost, continuous in u instead of on the
  candidate grid,

      E(u) = mean_{k, c} (fF_c(k) - fM_c(k + u(k))) ** 2  +  smooth_weight * R(u)

  fF, fM the generator's features (B, F, Kh, Kw; unit length per cell), fM sampled
  bilinearly at cell index k + u / stride (border padding). It inherits the features'
  contrast-specificity: on T1 -> T2 it gained little (BENCHMARKS.md).

R(u) is the mean squared difference of neighbouring control points' displacements (pixels
** 2; a diffusion regulariser). Descriptors and features are computed once, without
gradients; only u is optimised (the network's weights never change).

Conventions of :mod:`uda_core.spatial.warp` (pixels of the model grid, channels (dy, dx)).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.spatial.mind import mind_ssc
from uda_core.spatial.warp import (
    dense_from_control,
    dense_from_control_matrices,
    quantise,
)

SIMILARITIES = ("mind", "features")

__all__ = ["SIMILARITIES", "InstanceOptimisation", "RefinedRegNet", "refine_control_field",
           "refine_control_field_mind"]


@dataclass(frozen=True)
class InstanceOptimisation:
    """Settings of the test-time optimisation (chosen on validation subjects 40-42 only;
    BENCHMARKS.md, "Registration (issue 13, session 5)").

    iterations: Adam steps per batch of pairs (0: the network's field as it is).
    lr: Adam learning rate, pixels per step (Adam's steps are about lr long).
    smooth_weight: weight of R(u) against the data term.
    similarity: the data term, "mind" (MIND-SSC descriptors of the images) or "features"
        (the network's own features; the default of session 5).
    sample_every: "mind" only: the data term is read at every k-th pixel along rows and
        columns (1: all pixels; 2 lost 0.005 accuracy on validation for half the time;
        the descriptors are always those of the full image).
    """

    iterations: int = 20
    lr: float = 0.3
    smooth_weight: float = 0.01
    similarity: str = "mind"
    sample_every: int = 2

    def with_iterations(self, iterations: int) -> InstanceOptimisation:
        """These settings with another number of steps and the learning rate scaled by
        sqrt(old steps / new steps), so that fewer steps go as far. On validation subjects
        40-42 (demo:reg-t1 adapted with pemd) the rule matched the best hand-picked rates:
        T1->T2 / T1->PD accuracy 0.432 / 0.495 at 8 steps (lr 0.47; hand-picked 0.5: 0.431
        / 0.493), 0.455 / 0.515 at 10 (0.42; 0.5: 0.455 / 0.510), all above SimpleITK's
        0.378 / 0.318 (BENCHMARKS.md, "Session 9")."""
        if iterations < 0:
            raise ValueError(f"need iterations >= 0, got {iterations}")
        if iterations in (0, self.iterations):
            return dataclasses.replace(self, iterations=iterations)
        lr = self.lr * math.sqrt(self.iterations / iterations)
        return dataclasses.replace(self, iterations=iterations, lr=lr)

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.lr <= 0 or self.smooth_weight < 0:
            raise ValueError(f"need iterations >= 0, lr > 0, smooth_weight >= 0; got {self}")
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be >= 1, got {self.sample_every}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}; "
                             f"got {self.similarity!r}")


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


def _smoothness_operators(kh: int, kw: int, dtype: torch.dtype,
                          device) -> tuple[Tensor, Tensor]:
    """(Kh, Kh) and (Kw, Kw) matrices with d smoothness(u[b]) / d u[b] = rows @ u[b] +
    u[b] @ cols for one pair's (2, Kh, Kw) field: the path Laplacians D^T D of the two
    neighbour differences, scaled by 2 / (number of differences)."""

    def laplacian(n: int, count: int) -> Tensor:
        diff = torch.diff(torch.eye(n, dtype=torch.float64), dim=0)   # (n - 1, n)
        return (diff.T @ diff * (2.0 / max(count, 1))).to(dtype=dtype, device=device)

    return laplacian(kh, 2 * (kh - 1) * kw), laplacian(kw, 2 * kh * (kw - 1))


@functools.lru_cache(maxsize=16)
def _sample_plan(height: int, width: int, stride: int, sigma_px: float, every: int,
                 dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """The constants of :func:`refine_control_field_mind` for one image shape (cached, never
    modified), for a field held as (B, Kh, Kw * 2) with (x, y) pairs along its last axis:

    ``rows`` (Hs, Kh) and ``cols`` (Kw * 2, Ws * 2): the sample points in grid_sample's
    normalised coordinates are ``rows @ field @ cols + base`` ((B, Hs, Ws * 2) = (B, Hs, Ws,
    2) (x, y); ``cols`` = the dense field's column matrix (x) the pixels -> normalised
    scaling; ``base`` (Hs, Ws * 2) the sample pixels); their transposes ``rows_t`` and
    ``cols_t`` for the gradient; the smoothness gradient's ``smooth_rows`` (Kh, Kh) and
    ``smooth_cols`` (Kw * 2, Kw * 2)."""
    with torch.inference_mode(False):     # normal tensors: the cache outlives the call
        rows, cols_t = dense_from_control_matrices((height, width), stride, sigma_px,
                                                   torch.float64, torch.device("cpu"))
        rows, cols_t = rows[::every].contiguous(), cols_t[:, ::every].contiguous()
        smooth_rows, smooth_cols = _smoothness_operators(height // stride, width // stride,
                                                         torch.float64, torch.device("cpu"))
        to_norm = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)],
                               dtype=torch.float64)
        cols = torch.kron(cols_t, torch.diag(to_norm))          # (Kw * 2, Ws * 2)
        ys = torch.arange(0, height, every, dtype=torch.float64)
        xs = torch.arange(0, width, every, dtype=torch.float64)
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        base = (torch.stack((x, y), dim=-1) * to_norm - 1.0).reshape(len(ys), -1)
        constants = (rows, cols, rows.T, cols.T, smooth_rows,
                     torch.kron(smooth_cols, torch.eye(2, dtype=torch.float64)), base)
        return tuple(c.to(dtype=dtype, device=device).contiguous() for c in constants)


def refine_control_field_mind(fixed: Tensor, moving: Tensor, start: Tensor, stride: int,
                              smooth_sigma_px: float,
                              settings: InstanceOptimisation) -> Tensor:
    """Adam on the control-point field with the MIND data term (see the module doc).

    ``fixed``, ``moving`` (B, 1, H, W) images; ``start`` (B, 2, Kh, Kw) pixels; ``stride`` and
    ``smooth_sigma_px`` those of :func:`dense_from_control`. Returns (B, 2, Kh, Kw) pixels.

    The gradient is written out instead of taken by autograd (20 small autograd steps were
    overhead-bound). The field is held as (B, Kh, Kw, 2) (x, y), so that the sample points
    (the dense field of :func:`~uda_core.spatial.warp.dense_from_control_matrices` plus the
    pixels, in grid_sample's normalised coordinates) are two matrix products
    (:func:`_sample_plan`); the moving descriptors are read there by one grid_sample (border
    padding: the bilinear warp of :func:`~uda_core.spatial.warp.warp_image`), and the data
    term's derivative with respect to the points comes from grid_sample's own backward
    kernel (two fused kernels instead of a gather and a dozen products; with the products
    below, 20 steps and MIND 1.5x faster for one pair, 2.2x per pair in a batch of 8). The
    update is torch.optim.Adam's (betas 0.9, 0.999, eps 1e-8) on the gradient divided by
    the data term's constant factor, with eps divided alike, which leaves Adam's steps
    unchanged (bias corrections folded into the step size); so the numbers equal the
    autograd version's (``tests/models/test_regnet.py``). Each pair's energy is its own
    mean (a batch's is their sum), so a pair's result does not depend on its batch."""
    if settings.iterations == 0:
        return start.detach().clone()
    if start.device.type not in ("cpu", "cuda"):  # grid_sample's backward kernel: CPU, CUDA
        return refine_control_field_mind(fixed.cpu(), moving.cpu(), start.cpu(), stride,
                                         smooth_sigma_px, settings).to(start.device)
    with torch.inference_mode():          # fewer per-op costs than no_grad for ~15 small ops
        batch, _, height, width = fixed.shape
        kh, kw = start.shape[-2:]
        mind_fixed, mind_moving = mind_ssc(torch.cat((fixed, moving))).split(batch)
        every = settings.sample_every
        target = mind_fixed[..., ::every, ::every].contiguous()           # (B, 6, Hs, Ws)
        mind_moving = mind_moving.contiguous()
        plan = _sample_plan(height, width, int(stride), float(smooth_sigma_px), every,
                            start.dtype, start.device)
        rows, cols, rows_t, cols_t, smooth_rows, smooth_cols, base = plan
        sample_shape = (batch, target.shape[2], target.shape[3], 2)
        # the row matrices as batches of one matrix (stride 0): bmm takes them as they are
        rows, rows_t, smooth_rows = (m.expand(batch, *m.shape)
                                     for m in (rows, rows_t, smooth_rows))
        field = start.detach().flip(1).permute(0, 2, 3, 1).reshape(batch, kh, 2 * kw)
        # E = scale * sum (values - target) ** 2 / 2 per batch: Adam runs on grad / scale
        scale = 2.0 * batch / target.numel()
        smooth = settings.smooth_weight / scale
        first = torch.zeros_like(field)
        second = torch.zeros_like(field)
        beta1, beta2 = 0.9, 0.999
        for step in range(1, settings.iterations + 1):
            grid = torch.baddbmm(base, rows, (field.view(-1, 2 * kw) @ cols).view(batch, kh, -1))
            grid = grid.view(sample_shape)                                  # (B, Hs, Ws, 2)
            values = F.grid_sample(mind_moving, grid, mode="bilinear", padding_mode="border",
                                   align_corners=True)                     # (B, 6, Hs, Ws)
            grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                values.sub_(target), mind_moving, grid, 0, 1, True, (False, True))[1]
            grad = torch.bmm(rows_t, grad_grid.view(batch, grid.shape[1], -1))
            grad = (grad.view(-1, cols.shape[1]) @ cols_t).view(batch, kh, -1)  # (B, Kh, Kw 2)
            if smooth:
                grad.add_(torch.bmm(smooth_rows, field), alpha=smooth).view(-1, 2 * kw).addmm_(
                    field.view(-1, 2 * kw), smooth_cols, alpha=smooth)
            # Adam: lr m_hat / (sqrt(v_hat) + eps), with both bias corrections moved into
            # the step size and eps (1e-8 / scale) scaled by sqrt(1 - beta2 ** t) to match
            first.lerp_(grad, 1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            correction = (1 - beta2**step) ** 0.5
            field.addcdiv_(first, second.sqrt().add_(1e-8 / scale * correction),
                           value=-settings.lr * correction / (1 - beta1**step))
    # back to (B, 2, Kh, Kw) (dy, dx): a normal tensor (the loop's are inference tensors)
    return field.view(batch, kh, kw, 2).permute(0, 3, 1, 2).flip(1).contiguous()


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
        mind = self.settings.similarity == "mind"
        # inference tensors cannot enter the "features" energy's autograd
        with torch.inference_mode() if mind else torch.no_grad():
            feat_fixed, feat_moving = net.feature_maps(fixed, moving)
            out = net.from_features(feat_fixed, feat_moving, fixed.shape[-2:], dense=False)
        if mind:
            field = refine_control_field_mind(fixed, moving, out["disp_cp"], net.stride,
                                              net.smooth_sigma_px, self.settings)
        else:
            field = refine_control_field(feat_fixed, feat_moving, out["disp_cp"], net.stride,
                                         self.settings)
        out = dict(out)
        out["disp_cp"] = field
        out["disp"] = dense_from_control(field, fixed.shape[-2:], net.stride,
                                         net.smooth_sigma_px)
        labels = quantise(field, net.grid)
        out["probs"] = torch.zeros(labels.shape[0], net.grid.n_labels, *labels.shape[1:],
                                   dtype=field.dtype, device=field.device).scatter_(
                                       1, labels.unsqueeze(1), 1.0)   # one-hot (F.one_hot: slow)
        return out
