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

import functools
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


class _BilinearTable:
    """Bilinear reads of a fixed (B, C, H, W) image and their slopes, for many fields.

    The numbers of the bilinear :func:`~uda_core.spatial.warp.warp_image` plus its exact
    slopes, for an image read many times: each pixel's four bilinear coefficients (a, b - a,
    c - a, a - b - c + d of its neighbours a b / c d) are stored once, channel-major
    (4 C rows of B * H * W pixels), so one read is a single column gather and a few products
    along the points (vectorised; a pixel-major table made every product and the sum over
    the C = 6 channels run along a 6-long axis)."""

    def __init__(self, image: Tensor):
        batch, channels, height, width = image.shape
        self.shape = (batch, channels, height, width)
        padded = F.pad(image, (0, 1, 0, 1), mode="replicate")
        a = padded[..., :-1, :-1]
        b = padded[..., :-1, 1:]
        c = padded[..., 1:, :-1]
        d = padded[..., 1:, 1:]
        table = torch.stack((a, b - a, c - a, a - b - c + d))           # (4, B, C, H, W)
        self.table = table.transpose(1, 2).reshape(4 * channels, -1).contiguous()
        self.offsets = (torch.arange(batch, device=image.device) * height * width).view(-1, 1)

    def read(self, dense: Tensor, points: Tensor, upper: Tensor, upper_low: Tensor
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The image at ``points + dense`` for N sample pixels: ``points`` (2, N) pixel
        indices (y; x), ``dense`` (B, 2, N) their displacements (pixels); ``upper`` (2, 1)
        the last pixel (H - 1; W - 1), ``upper_low`` (2, 1) the last bilinear cell's corner.
        Returns values, slopes d/dy and d/dx, each (C, B * N) (pair-major points), and the
        (B, 2, N) mask of the coordinates clamped to the border (where the true slope is
        0)."""
        batch, channels, _, width = self.shape
        raw = dense + points                                            # (B, 2, N)
        position = torch.minimum(raw.clamp(min=0), upper)
        low = torch.minimum(position.floor(), upper_low)
        weight = position - low
        wy, wx = weight[:, 0].reshape(-1), weight[:, 1].reshape(-1)     # (B * N,)
        index = torch.add(low[:, 1], low[:, 0], alpha=width).long().add_(self.offsets)
        a, bx, cy, dxy = self.table.index_select(1, index.view(-1)).view(4, channels, -1)
        slope_x = torch.addcmul(bx, wy, dxy)
        slope_y = torch.addcmul(cy, wx, dxy)
        values = torch.addcmul(torch.addcmul(a, wx, slope_x), wy, cy)
        return values, slope_y, slope_x, raw != position


@functools.lru_cache(maxsize=16)
def _sample_plan(height: int, width: int, stride: int, sigma_px: float, every: int,
                 dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """The constants of :func:`refine_control_field_mind` for one image shape (cached, never
    modified): ``rows`` (Hs, Kh) and ``cols_t`` (Kw, Ws), the dense field at the Hs x Ws
    sample pixels, their transposes ``rows_t`` and ``cols``, the smoothness gradient's
    ``smooth_rows`` and ``smooth_cols``, the sample pixels ``points`` (2, N) (y; x), the
    last pixel ``upper`` (2, 1) and the last bilinear cell's corner ``upper_low`` (2, 1)."""
    with torch.inference_mode(False):     # normal tensors: the cache outlives the call
        rows, cols_t = dense_from_control_matrices((height, width), stride, sigma_px, dtype,
                                                   device)
        rows, cols_t = rows[::every].contiguous(), cols_t[:, ::every].contiguous()
        smooth_rows, smooth_cols = _smoothness_operators(height // stride, width // stride,
                                                         dtype, device)
        ys = torch.arange(0, height, every, dtype=dtype, device=device)
        xs = torch.arange(0, width, every, dtype=dtype, device=device)
        points = torch.stack([p.reshape(-1) for p in torch.meshgrid(ys, xs, indexing="ij")])

        def column(y: float, x: float) -> Tensor:
            return torch.tensor([[y], [x]], dtype=dtype, device=device)

        return (rows, cols_t, rows.T.contiguous(), cols_t.T.contiguous(), smooth_rows,
                smooth_cols, points, column(height - 1, width - 1),
                column(max(height - 2, 0), max(width - 2, 0)))


def refine_control_field_mind(fixed: Tensor, moving: Tensor, start: Tensor, stride: int,
                              smooth_sigma_px: float,
                              settings: InstanceOptimisation) -> Tensor:
    """Adam on the control-point field with the MIND data term (see the module doc).

    ``fixed``, ``moving`` (B, 1, H, W) images; ``start`` (B, 2, Kh, Kw) pixels; ``stride`` and
    ``smooth_sigma_px`` those of :func:`dense_from_control`. Returns (B, 2, Kh, Kw) pixels.

    The gradient is written out instead of taken by autograd (20 small autograd steps were
    overhead-bound): the dense field is ``rows @ u @ cols_t``
    (:func:`~uda_core.spatial.warp.dense_from_control_matrices`), the warp and its
    derivative come from one table of the moving descriptors (:class:`_BilinearTable`), and
    the update is torch.optim.Adam's (betas 0.9, 0.999, eps 1e-8), so the numbers equal the
    autograd version's (``tests/models/test_regnet.py``). Each pair's energy is its own mean
    (a batch's is their sum), so a pair's result does not depend on its batch."""
    if settings.iterations == 0:
        return start.detach().clone()
    with torch.inference_mode():          # fewer per-op costs than no_grad for ~40 small ops
        field = start.detach().clone()
        batch, _, height, width = fixed.shape
        mind_fixed, mind_moving = mind_ssc(torch.cat((fixed, moving))).split(batch)
        every = settings.sample_every
        table = _BilinearTable(mind_moving)
        target = mind_fixed[..., ::every, ::every].transpose(0, 1).reshape(
            mind_fixed.shape[1], -1)                                        # (6, B * N)
        plan = _sample_plan(height, width, int(stride), float(smooth_sigma_px), every,
                            field.dtype, field.device)
        rows, cols_t, rows_t, cols, smooth_rows, smooth_cols, points, upper, upper_low = plan
        sample_shape = (rows.shape[0], cols_t.shape[1])
        scale = 2.0 * batch / target.numel()       # each pair's own mean: batch-independent
        first = torch.zeros_like(field)
        second = torch.zeros_like(field)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        smooth = settings.smooth_weight
        for step in range(1, settings.iterations + 1):
            dense = (rows @ field @ cols_t).view(batch, 2, -1)               # (B, 2, N)
            values, slope_y, slope_x, clamped = table.read(dense, points, upper, upper_low)
            residual = values.sub_(target).mul_(scale)                       # (6, B * N)
            grad_dense = torch.stack(((residual * slope_y).sum(0), (residual * slope_x).sum(0)))
            grad_dense = grad_dense.view(2, batch, -1).transpose(0, 1).masked_fill_(clamped, 0)
            grad = rows_t @ grad_dense.reshape(batch, 2, *sample_shape) @ cols  # (B, 2, Kh, Kw)
            if smooth:
                grad.add_(smooth_rows @ field, alpha=smooth).add_(field @ smooth_cols,
                                                                  alpha=smooth)
            first.lerp_(grad, 1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denominator = second.sqrt().div_((1 - beta2**step) ** 0.5).add_(eps)
            field.addcdiv_(first, denominator, value=-settings.lr / (1 - beta1**step))
    return field.clone()      # a normal tensor (the loop's are inference tensors)


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
            out = net.from_features(feat_fixed, feat_moving, fixed.shape[-2:])
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
