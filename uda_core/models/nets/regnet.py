"""A 2D discrete displacement network for registration (PDD-net-like; the details are our design).

What is known of the method (METHODS.md section 6: Heinrich & Hansen, MIDL 2020, built on
PDD-net, Heinrich, MICCAI 2019) is the outline; the exact layers below are our own choices.

Conventions are those of :mod:`uda_core.spatial.warp`: images (B, 1, H, W), displacements
in full-resolution PIXELS with channels (dy, dx), backward warping
``warped(y, x) = moving(y + u_y, x + u_x)``, control points every ``stride`` pixels at
((i + 0.5) stride - 0.5, (j + 0.5) stride - 0.5), labels ``iy * n + ix`` on a
:class:`~uda_core.spatial.warp.DisplacementGrid`.

Architecture:

* ``generator`` (shared by the fixed and the moving image): conv3x3 + InstanceNorm + ReLU at full
  resolution, then per factor 2 of ``stride`` a conv4x4 with stride 2 (padding 1) + InstanceNorm
  + ReLU and a conv3x3 + InstanceNorm + ReLU, and a final conv1x1 to ``features`` channels,
  L2-normalised per pixel. Output (B, features, Kh, Kw) with Kh = H / stride. The 4x4 stride-2
  kernels centre feature cell (i, j) exactly on control point (i, j) (a 3x3 stride-2 conv would
  shift it by half a pixel per level). InstanceNorm (not BatchNorm): per-image intensity
  statistics differ between modalities, and batches here are small.
* cost volume: for control point k and candidate d, ``D(k, d) = -mean_c (fF_c(k) - fM_c(k + d))^2``
  (0 for a perfect match, more negative for worse), the moving features sampled at k + d
  bilinearly (cell (i, j) is at control point (i, j), so k + d lies at cell index
  (i + dy / stride, j + dx / stride); border padding), computed from dot products at
  whole-cell shifts (see :func:`cost_volume`). Shape (B, L, Kh, Kw).
* ``head1`` and ``head2`` (:class:`RegularisingHead`, same architecture, independently and
  randomly initialised): two mean-field-like regularisation passes of the cost, giving logits
  (B, L, Kh, Kw); see :class:`RegularisingHead`.
* outputs: the mean of the two heads' softmaxes ``probs``, the probability-weighted expectation
  of the candidates at each control point ``disp_cp`` (not the argmax, so it is differentiable
  and sub-label) and the dense field ``disp`` from
  :func:`~uda_core.spatial.warp.dense_from_control` (bilinear upsampling + Gaussian of
  ``smooth_sigma_px``).

For Maximum Classifier Discrepancy the generator and the two heads are separate attributes
(``generator``, ``head1``, ``head2``) with disjoint parameters; the cost volume has none.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uda_core.spatial.warp import (
    DisplacementGrid,
    dense_from_control,
    expected_displacement,
)

__all__ = ["DiscreteRegNet", "FeatureExtractor", "RegularisingHead", "cost_volume",
           "head_logits"]


class InstanceNorm(nn.InstanceNorm2d):
    """nn.InstanceNorm2d (affine, no running statistics: the same parameters and state-dict
    keys) computed as a GroupNorm with one group per channel: the same numbers (to float
    rounding) and gradients, ~6x faster on the CPU for the generator's small maps."""

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


def _conv_in_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1,
                  padding: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False),
        InstanceNorm(out_channels, affine=True),
        nn.ReLU(inplace=True),
    ]


class FeatureExtractor(nn.Module):
    """Shared feature net G: (B, in_channels, H, W) -> unit-length features (B, F, H/s, W/s).

    ``stride`` s must be a power of two (1, 2, 4, 8, ...): log2(s) stride-2 stages. Widths:
    ``width`` at full resolution, doubled per stage up to 4 * width.
    """

    def __init__(self, in_channels: int = 1, features: int = 16, stride: int = 4,
                 width: int = 16):
        super().__init__()
        if stride < 1 or stride & (stride - 1):
            raise ValueError(f"stride must be a power of two (1, 2, 4, 8, ...), got {stride}")
        if min(in_channels, features, width) < 1:
            raise ValueError("in_channels, features and width must be >= 1")
        layers = _conv_in_relu(in_channels, width)
        channels = width
        for level in range(1, int(math.log2(stride)) + 1):
            out = width * min(2**level, 4)
            layers += _conv_in_relu(channels, out, kernel=4, stride=2, padding=1)
            layers += _conv_in_relu(out, out)
            channels = out
        layers.append(nn.Conv2d(channels, features, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        features = self.body(image)     # unit length per cell (F.normalize's numbers, faster)
        return features / features.square().sum(1, keepdim=True).sqrt().clamp_min(1e-12)


_NEIGHBOURS = ((0, 0), (0, 1), (1, 0), (1, 1), (1, -1))   # offsets e of the products N_e


@functools.lru_cache(maxsize=16)
def _cost_plan(candidates_key: bytes, stride: int, dtype: torch.dtype,
               device: torch.device) -> tuple[Tensor, int]:
    """The (L, 6 * W * W) matrix of :func:`cost_volume` and the shift reach R (W = 2R + 1);
    ``candidates_key``: the (L, 2) candidate displacements (pixels, float64) as bytes.

    Candidate l sits at cell offset o = n + t (n integer, 0 <= t < 1 per axis); its bilinear
    sample is ``b = sum_corners w_a fM(k + n + a)``, so ``-2 fF . b`` is a combination of the
    maps ``G_s(k) = fF(k) . fM(k + s)`` and ``|b|^2`` one of ``N_e(k + s) = fM(k + s) .
    fM(k + s + e)`` for the five e in ``_NEIGHBOURS`` (the others by symmetry); s in
    [-R, R]^2. Column (kind, sy + R, sx + R), kind 0 = G, kind 1 + i = N of neighbour i.
    Cached; normal tensors even when first built under torch.inference_mode."""
    with torch.inference_mode(False):
        candidates = np.frombuffer(candidates_key, dtype=np.float64).reshape(-1, 2)  # (L, 2) px
        offsets = torch.from_numpy(candidates.copy()) / stride                     # cells
        whole = torch.floor(offsets)
        frac = offsets - whole
        reach = int(max(-whole.min().item(), whole.max().item() + 1))
        width = 2 * reach + 1
        matrix = torch.zeros(len(candidates), 1 + len(_NEIGHBOURS), width, width,
                             dtype=torch.float64)
        for label, ((ny, nx), (ty, tx)) in enumerate(zip(whole.long().tolist(),
                                                         frac.tolist(), strict=True)):
            corners = [((a, c), (ty if a else 1 - ty) * (tx if c else 1 - tx))
                       for a in (0, 1) for c in (0, 1)]
            for (a, c), weight in corners:
                matrix[label, 0, ny + a + reach, nx + c + reach] -= 2 * weight
                for (a2, c2), weight2 in corners:
                    e, at = (a2 - a, c2 - c), (ny + a, nx + c)
                    if e not in _NEIGHBOURS:            # N_{-e}(q) = N_e(q - e)
                        e, at = (a - a2, c - c2), (ny + a2, nx + c2)
                    matrix[label, 1 + _NEIGHBOURS.index(e), at[0] + reach,
                           at[1] + reach] += weight * weight2
        return matrix.reshape(len(candidates), -1).to(dtype=dtype, device=device), reach


def cost_volume(feat_fixed: Tensor, feat_moving: Tensor, candidates_px: Tensor,
                stride: int) -> Tensor:
    """Matching cost of every candidate displacement at every control point.

    ``D(k, d) = -mean_c (fF_c(k) - fM_c(k + d))^2``; fM is sampled bilinearly at feature-cell
    index k + d / stride with border padding (the numbers of ``grid_sample``, align_corners=True
    on cell indices, padding_mode="border"; ``tests/models/test_regnet.py`` checks them).

    Computed without sampling the C-channel features L times: the squared distance to a
    bilinear sample expands into dot products of fF and of fM with fM at whole-cell shifts,
    (1 + 5) * (2R + 1)^2 scalar maps, and one (L, 6 (2R+1)^2) matrix (:func:`_cost_plan`)
    combines them for all L candidates; the moving features are replicate-padded by R + 1 cells,
    which is the border padding. ~3x faster than grid_sample on the CPU, equal to ~1e-6.

    Args:
        feat_fixed, feat_moving: (B, C, Kh, Kw) features, cell (i, j) at control point (i, j).
        candidates_px: (L, 2) candidate displacements (dy, dx) in full-resolution pixels.
        stride: control-point spacing in pixels.

    Returns:
        (B, L, Kh, Kw) costs (<= 0 up to rounding; higher = better match).
    """
    if feat_fixed.shape != feat_moving.shape or feat_fixed.dim() != 4:
        raise ValueError(
            f"feature maps must have the same (B, C, Kh, Kw) shape, got "
            f"{tuple(feat_fixed.shape)} and {tuple(feat_moving.shape)}"
        )
    batch, channels, kh, kw = feat_fixed.shape
    key = candidates_px.detach().to("cpu", torch.float64).numpy().tobytes()   # cheap, hashable
    matrix, reach = _cost_plan(key, int(stride), feat_fixed.dtype, feat_fixed.device)
    padded = F.pad(feat_moving, (reach + 1,) * 4, mode="replicate")
    inner = padded[:, :, 1:-1, 1:-1]                     # padded by R: index k + s + R
    rows, cols = inner.shape[-2:]
    products = torch.stack([
        (inner * padded[:, :, 1 + ey:rows + 1 + ey, 1 + ex:cols + 1 + ex]).sum(1)
        for ey, ex in _NEIGHBOURS])                       # (5, B, Kh + 2R, Kw + 2R)
    shifted_n = products.unfold(2, kh, 1).unfold(3, kw, 1)   # (5, B, W, W, Kh, Kw) views
    width = rows - kh + 1
    dots = torch.stack([(inner[:, :, sy:sy + kh, sx:sx + kw] * feat_fixed).sum(1)
                        for sy in range(width) for sx in range(width)], 1)  # one per shift
    dots = dots.view(batch, 1, width, width, kh, kw)  # (a 6D broadcast product was 1.6x slower)
    maps = torch.cat((dots, shifted_n.transpose(0, 1)), 1)              # (B, 6, W, W, ...)
    cost = matrix @ maps.reshape(batch, matrix.shape[1], kh * kw)         # (B, L, K)
    squared = feat_fixed.square().sum(1).view(batch, 1, kh * kw)
    return ((cost + squared) * (-1.0 / channels)).view(batch, -1, kh, kw)


def _replicate_pool(x: Tensor, kind: str) -> Tensor:
    """3x3, stride-1 pooling of the last two axes with replicated edges (size kept).

    The reference implementation (pad + avg_pool2d / max_pool2d); the heads compute
    the same numbers faster (:func:`_min3`, :func:`_box_matrix`, :func:`_mean3`)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    if kind == "avg":
        return F.avg_pool2d(padded, 3, stride=1)
    return -F.max_pool2d(-padded, 3, stride=1)  # min-pool


def _min3(x: Tensor, dim: int) -> Tensor:
    """3-tap minimum along ``dim`` with replicated edges (size kept): the minimum of each
    neighbouring pair, then of each two neighbouring pairs (no padded copy of ``x``)."""
    n = x.shape[dim]
    if n == 1:
        return x
    pairs = torch.minimum(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1))   # n - 1
    if n == 2:
        return torch.cat((pairs, pairs), dim)
    inner = torch.minimum(pairs.narrow(dim, 0, n - 2), pairs.narrow(dim, 1, n - 2))
    return torch.cat((pairs.narrow(dim, 0, 1), inner, pairs.narrow(dim, n - 2, 1)), dim)


def _mean3(x: Tensor, dim: int) -> Tensor:
    """3-tap mean along ``dim`` with replicated edges (size kept), as five in-place adds of
    shifted views (faster here than a small matrix product over a short axis)."""
    n = x.shape[dim]
    if n == 1:
        return x.clone()
    third = 1.0 / 3.0
    out = x * third
    out.narrow(dim, 1, n - 1).add_(x.narrow(dim, 0, n - 1), alpha=third)
    out.narrow(dim, 0, n - 1).add_(x.narrow(dim, 1, n - 1), alpha=third)
    out.narrow(dim, 0, 1).add_(x.narrow(dim, 0, 1), alpha=third)
    out.narrow(dim, n - 1, 1).add_(x.narrow(dim, n - 1, 1), alpha=third)
    return out


@functools.lru_cache(maxsize=32)
def _box_matrix(n: int, passes: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(n, n): ``passes`` 3-tap means with replicated edges along one axis, as a matrix
    (a 3x3 box mean is one such pass along each axis in turn; two passes are one 5-tap
    matrix). Cached; normal tensors even when first built under torch.inference_mode."""
    with torch.inference_mode(False):
        index = torch.arange(n)
        one = torch.zeros(n, n, dtype=torch.float64)
        for shift in (-1, 0, 1):
            one[index, (index + shift).clamp(0, n - 1)] += 1.0 / 3.0
        return torch.linalg.matrix_power(one, passes).to(dtype=dtype, device=device)


class RegularisingHead(nn.Module):
    """Classifier head: cost volume (B, L, Kh, Kw) -> regularised label logits (B, L, Kh, Kw).

    With E = -cost >= 0 (dissimilarity) and positive learnable scalars alpha, lambda1, lambda2,
    gamma (stored as logarithms) and a learnable per-label bias b (L,):

        s  = alpha * E
        R(e) = spatial_avg3x3( avg3x3(avg3x3(min3x3(e))) )   # 3x3 pools over the n x n
                                                                # displacement axes, then over
                                                                # the control-point grid
        e1 = s + lambda1 * R(s)          (first mean-field pass)
        e2 = s + lambda2 * R(e1)         (second pass)
        logits = -gamma * e2 + b

    The min-pool followed by two avg-pools over the displacement axes approximates a smooth
    min-convolution (a cheap, differentiable diffusion regulariser of each point's label costs);
    the spatial avg-pool passes those costs on to the neighbouring control points. All pools are
    3x3, stride 1, with replicated edges. Softmax ignores constant offsets, so the "beta" of
    ``alpha * cost + beta`` would have no effect and is replaced by the per-label bias b (a
    learnable displacement prior). Initial values are randomly jittered (alpha around
    2 * features, since mean-over-channel distances of unit vectors lie in [0, 4 / features];
    lambdas around 1; gamma around 1; b around 0), so two heads start different.
    """

    def __init__(self, n_per_axis: int, features: int = 16, jitter: float = 0.1):
        super().__init__()
        self.n_per_axis = int(n_per_axis)
        n_labels = self.n_per_axis**2

        def scalar(value: float) -> nn.Parameter:
            return nn.Parameter(torch.tensor(math.log(value)) + jitter * torch.randn(()))

        self.log_alpha = scalar(2.0 * features)
        self.log_lambda1 = scalar(1.0)
        self.log_lambda2 = scalar(1.0)
        self.log_gamma = scalar(1.0)
        self.label_bias = nn.Parameter(0.1 * jitter * torch.randn(n_labels))

    def _regularise(self, energy: Tensor) -> Tensor:
        batch, n_labels, kh, kw = energy.shape
        n = self.n_per_axis
        # (B, L, Kh, Kw) -> (B, n, n, Kh, Kw): axis 1 = dy (rows), 2 = dx (columns)
        # (B, L, Kh, Kw) -> (B, n, n, Kh * Kw): axis 1 = dy (rows), 2 = dx (columns)
        view = _min3(_min3(energy.reshape(batch, n, n, kh * kw), 1), 2)
        # two 3x3 means over the displacement axes: one 5-tap matrix along each axis (the
        # heads spent most of their time in the overhead of many small pooling passes)
        twice = _box_matrix(n, 2, energy.dtype, energy.device)
        view = (twice @ view.reshape(batch, n, -1)).reshape(batch, n, n, kh * kw)
        view = twice @ view
        # spatial: a 3x3 mean over the control-point grid
        view = view.reshape(batch, n_labels, kh, kw)
        return _mean3(_mean3(view, 3), 2)

    def forward(self, cost: Tensor) -> Tensor:
        if cost.dim() != 4 or cost.shape[1] != self.n_per_axis**2:
            raise ValueError(
                f"cost must be (B, {self.n_per_axis**2}, Kh, Kw), got {tuple(cost.shape)}"
            )
        unary = self.log_alpha.exp() * (-cost)
        energy = unary + self.log_lambda1.exp() * self._regularise(unary)
        energy = unary + self.log_lambda2.exp() * self._regularise(energy)
        return -self.log_gamma.exp() * energy + self.label_bias.view(1, -1, 1, 1)


def head_logits(heads: tuple[RegularisingHead, ...], cost: Tensor) -> tuple[Tensor, ...]:
    """Each head's logits on one cost volume (B, L, Kh, Kw), in one pass over the heads
    stacked along the batch (the numbers of ``head(cost)`` for each); gradients reach every
    head's own parameters.

    The regulariser R (min and means) is positively homogeneous, R(a E) = a R(E) for a > 0,
    so with E = -cost a head's logits are ``-gamma alpha (E + lambda2 R(E + lambda1 R(E))) +
    b``: R(E) is computed once for all heads and the second pass on the stacked heads. The
    per-head products run on (H, N) views (one scalar per row), which the CPU vectorises;
    broadcasting (H, 1, 1, 1, 1) scalars over 5D tensors did not (2x slower at batch 4)."""
    batch, n_labels = cost.shape[:2]
    count = len(heads)

    def scalars(name: str) -> Tensor:        # (H, 1): head h's value
        return torch.stack([getattr(head, name) for head in heads]).exp().view(-1, 1)

    regularise = heads[0]._regularise          # no parameters: the same for every head
    energy = -cost
    flat = energy.reshape(1, -1)                                         # (1, N)
    first = torch.addcmul(flat, scalars("log_lambda1"), regularise(energy).reshape(1, -1))
    second = regularise(first.view(count * batch, *cost.shape[1:])).view(count, -1)
    scale = -scalars("log_gamma") * scalars("log_alpha")                 # (H, 1)
    inner = torch.addcmul(flat * scale, scale * scalars("log_lambda2"), second)   # (H, N)
    bias = torch.stack([head.label_bias for head in heads]).view(count, 1, n_labels, 1)
    logits = (inner.view(count, batch, n_labels, -1) + bias).view(count, *cost.shape)
    return tuple(logits.unbind(0))


class DiscreteRegNet(nn.Module):
    """2D discrete displacement network: (fixed, moving) -> label logits and displacements.

    Args:
        grid: the candidate displacements; when given, ``radius_px`` and ``n_per_axis`` are
            ignored. Otherwise ``DisplacementGrid(radius_px, n_per_axis)``.
        radius_px: largest candidate displacement per axis, full-resolution pixels.
        n_per_axis: candidates per axis (odd); L = n_per_axis ** 2 labels.
        stride: control-point spacing in pixels, a power of two; H and W of the inputs must be
            multiples of it.
        features: channels of the (L2-normalised) features.
        smooth_sigma_px: Gaussian sigma (pixels) applied when upsampling to the dense field.
        in_channels: channels of the input images (1 for the slices here).
        width: channels of the first feature layer (doubled per stride-2 stage, at most x4).

    ``config`` holds these settings as plain values, so ``DiscreteRegNet(**net.config)``
    rebuilds the architecture.
    """

    def __init__(
        self,
        grid: DisplacementGrid | None = None,
        radius_px: float = 6.0,
        n_per_axis: int = 11,
        stride: int = 4,
        features: int = 16,
        smooth_sigma_px: float = 4.0,
        in_channels: int = 1,
        width: int = 16,
    ):
        super().__init__()
        if grid is None:
            grid = DisplacementGrid(radius_px, n_per_axis)
        elif not isinstance(grid, DisplacementGrid):
            raise TypeError(f"grid must be a DisplacementGrid, got {type(grid).__name__}")
        if smooth_sigma_px < 0:
            raise ValueError(f"smooth_sigma_px must be >= 0, got {smooth_sigma_px}")
        self.grid = grid
        self.stride = int(stride)
        self.features = int(features)
        self.smooth_sigma_px = float(smooth_sigma_px)
        self.in_channels = int(in_channels)
        self.config = {
            "radius_px": grid.radius_px,
            "n_per_axis": grid.n_per_axis,
            "stride": self.stride,
            "features": self.features,
            "smooth_sigma_px": self.smooth_sigma_px,
            "in_channels": self.in_channels,
            "width": int(width),
        }
        self.generator = FeatureExtractor(in_channels, features, stride, width)
        self.head1 = RegularisingHead(grid.n_per_axis, features)
        self.head2 = RegularisingHead(grid.n_per_axis, features)
        self.candidates: Tensor
        self.register_buffer("candidates", grid.candidates, persistent=False)  # (L, 2) px

    def _check_inputs(self, fixed: Tensor, moving: Tensor) -> None:
        for name, image in (("fixed", fixed), ("moving", moving)):
            if not isinstance(image, Tensor) or image.dim() != 4:
                raise ValueError(f"{name} must be a (B, C, H, W) tensor")
        if fixed.shape != moving.shape:
            raise ValueError(
                f"fixed and moving must have the same shape, got {tuple(fixed.shape)} and "
                f"{tuple(moving.shape)}"
            )
        if fixed.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channel(s), got {fixed.shape[1]}"
            )
        height, width = fixed.shape[-2:]
        if height % self.stride or width % self.stride:
            raise ValueError(
                f"H and W must be multiples of the control-point stride {self.stride}, "
                f"got {height}x{width}"
            )

    def cost(self, fixed: Tensor, moving: Tensor) -> Tensor:
        """Cost volume (B, L, Kh, Kw) of the generator's features (see :func:`cost_volume`)."""
        self._check_inputs(fixed, moving)
        return cost_volume(self.generator(fixed), self.generator(moving), self.candidates,
                           self.stride)

    def forward(self, fixed: Tensor, moving: Tensor) -> dict[str, Tensor]:
        """Register ``moving`` onto ``fixed``.

        Args:
            fixed, moving: (B, 1, H, W) images; H, W multiples of ``stride``.

        Returns:
            dict with
            ``cost`` (B, L, Kh, Kw) matching costs;
            ``logits1``, ``logits2`` (B, L, Kh, Kw) the heads' logits;
            ``probs1``, ``probs2`` their softmaxes over L;
            ``probs`` (B, L, Kh, Kw) mean of the two softmaxes;
            ``disp_cp`` (B, 2, Kh, Kw) expected displacement under ``probs``, pixels (dy, dx);
            ``disp`` (B, 2, H, W) dense displacement, pixels (dy, dx), such that
            ``warp_image(moving, disp)`` approximates ``fixed``.
        """
        feat_fixed, feat_moving = self.feature_maps(fixed, moving)
        return self.from_features(feat_fixed, feat_moving, fixed.shape[-2:])

    def feature_maps(self, fixed: Tensor, moving: Tensor) -> tuple[Tensor, Tensor]:
        """The generator's features (B, F, Kh, Kw) of both images, in one batched pass
        (InstanceNorm is per image, so this equals two separate passes)."""
        self._check_inputs(fixed, moving)
        both = self.generator(torch.cat((fixed, moving)))
        return both[: fixed.shape[0]], both[fixed.shape[0]:]

    def from_features(self, feat_fixed: Tensor, feat_moving: Tensor, shape,
                      dense: bool = True) -> dict[str, Tensor]:
        """:meth:`forward` from the generator's features (B, F, Kh, Kw) of both images, for
        callers that keep the features (test-time instance optimisation); ``shape`` is the
        images' (H, W). ``dense=False`` leaves out ``disp`` (for callers that replace it)."""
        cost = cost_volume(feat_fixed, feat_moving, self.candidates, self.stride)
        logits1, logits2 = head_logits((self.head1, self.head2), cost)
        probs1 = torch.softmax(logits1, dim=1)
        probs2 = torch.softmax(logits2, dim=1)
        probs = 0.5 * (probs1 + probs2)
        disp_cp = expected_displacement(probs, self.grid)
        out = {
            "cost": cost,
            "logits1": logits1,
            "logits2": logits2,
            "probs1": probs1,
            "probs2": probs2,
            "probs": probs,
            "disp_cp": disp_cp,
        }
        if dense:
            out["disp"] = dense_from_control(disp_cp, tuple(shape), self.stride,
                                             self.smooth_sigma_px)
        return out
