"""nnU-Net v2's default network (PlainConvUNet) rebuilt from a plans.json entry, own layers.

Why not ``dynamic-network-architectures`` itself: it also pulls in timm and einops (for its
transformer networks), and nnU-Net builds its class by name with ``pydoc.locate``; rebuilding
the plain U-Net from the plans' literal numbers keeps imports to torch and the set of
networks we run closed. The module tree (and so the state-dict keys) is the one nnU-Net
writes, so its checkpoints load with ``strict=True``:

* ``encoder.stages.{s}.0.convs.{i}`` : conv (stride ``strides[s]`` on the first conv of a
  stage, padding (k - 1) // 2) -> norm -> non-linearity, each also reachable as
  ``all_modules.{0,1,2}`` (the same modules under a second name, as nnU-Net has them);
* ``decoder.transpconvs.{s}``: transposed conv, kernel = stride = the encoder stride below;
* ``decoder.stages.{s}``: convs on [upsampled, skip] concatenated (upsampled first);
* ``decoder.seg_layers.{s}``: 1x1 conv to logits per decoder stage (only the last is used:
  deep supervision off at inference); ``decoder.encoder`` is the encoder again.

Images (B, in_channels, *spatial) -> logits (B, num_classes, *spatial) with ``dims`` 2 or 3
spatial axes; each spatial size must be divisible by the product of the strides along it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

_NORMS: dict[str, dict[int, type[nn.Module]]] = {
    "instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}}
_CONVS: dict[int, Any] = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED: dict[int, Any] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class ConvNormNonlin(nn.Module):
    """conv -> norm -> non-linearity (``conv``, ``norm``, ``nonlin``; ``all_modules`` in order)."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, kernel: list[int],
                 stride: list[int], settings: dict[str, Any]) -> None:
        super().__init__()
        self.conv = _CONVS[dims](in_ch, out_ch, kernel, stride,
                                 padding=[(k - 1) // 2 for k in kernel],
                                 bias=settings["conv_bias"])
        ops: list[nn.Module] = [self.conv]
        if settings["norm"] is not None:
            self.norm = _NORMS[settings["norm"]][dims](out_ch, eps=settings["norm_eps"],
                                                      affine=settings["norm_affine"])
            ops.append(self.norm)
        if settings["nonlin"] is not None:
            self.nonlin = self.make_nonlin(settings)
            ops.append(self.nonlin)
        self.all_modules = nn.Sequential(*ops)

    @staticmethod
    def make_nonlin(settings: dict[str, Any]) -> nn.Module:
        """The non-linearity ``settings`` names ("leaky_relu" or "relu")."""
        return (nn.LeakyReLU(settings["negative_slope"], inplace=True)
                if settings["nonlin"] == "leaky_relu" else nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.all_modules(x)


class ConvStack(nn.Module):
    """``n`` ConvNormNonlin as ``convs``; only the first has ``stride``."""

    def __init__(self, n: int, dims: int, in_ch: int, out_ch: int, kernel: list[int],
                 stride: list[int], settings: dict[str, Any]) -> None:
        super().__init__()
        ones = [1] * dims
        self.convs = nn.Sequential(*[ConvNormNonlin(dims, in_ch if i == 0 else out_ch, out_ch,
                                                    kernel, stride if i == 0 else ones,
                                                    settings) for i in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class _Encoder(nn.Module):
    def __init__(self, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class _Decoder(nn.Module):
    def __init__(self, encoder: nn.Module, transpconvs: Sequence[nn.Module],
                 stages: Sequence[nn.Module], seg_layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transpconvs)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[Tensor]) -> Tensor:
        x = skips[-1]
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages, strict=True)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), 1))
        return self.seg_layers[-1](x)


def layer_settings(dims: int, norm: str | None, nonlin: str | None, conv_bias: bool,
                   norm_eps: float, norm_affine: bool, negative_slope: float) -> dict[str, Any]:
    """The per-layer settings ConvNormNonlin takes, checked (ValueError naming the bad one)."""
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if norm is not None and norm not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)} or None, got {norm!r}")
    if nonlin not in (None, "leaky_relu", "relu"):
        raise ValueError(f"nonlin must be 'leaky_relu', 'relu' or None, got {nonlin!r}")
    return {"conv_bias": bool(conv_bias), "norm": norm, "norm_eps": float(norm_eps),
            "norm_affine": bool(norm_affine), "nonlin": nonlin,
            "negative_slope": float(negative_slope)}


def per_stage(value: Any, n: int, what: str) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * n
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} entries for {n} stages")
    return values


def per_axis(value: Any, dims: int, what: str) -> list[int]:
    values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * dims
    if len(values) != dims:
        raise ValueError(f"{what} {values} does not have {dims} entries")
    return values


def stage_layout(dims: int, features_per_stage: Sequence[int], kernel_sizes: Any,
                 strides: Any) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """(features, kernels, strides) per stage, each kernel/stride one entry per spatial axis;
    ValueError naming the bad argument."""
    features = [int(f) for f in features_per_stage]
    n = len(features)
    if n < 2:
        raise ValueError("a U-Net needs at least 2 stages")
    kernels = [per_axis(k, dims, "kernel size") for k in per_stage(kernel_sizes, n,
                                                                       "kernel_sizes")]
    return features, kernels, [per_axis(s, dims, "stride") for s in per_stage(strides, n,
                                                                                "strides")]


def plain_decoder(encoder: nn.Module, features: list[int], kernels: list[list[int]],
                  strides: list[list[int]], n_conv_per_stage_decoder: Any, num_classes: int,
                  dims: int, settings: dict[str, Any]) -> _Decoder:
    """nnU-Net's U-Net decoder over `encoder`'s skips (module names as nnU-Net's: transpconvs,
    stages, seg_layers): per level a transposed conv (kernel = stride), a conv stack on the
    concatenated skip, a 1x1 segmentation layer."""
    n = len(features)
    n_dec = [int(c) for c in per_stage(n_conv_per_stage_decoder, n - 1,
                                        "n_conv_per_stage_decoder")]
    ups, stages, segs = [], [], []
    for s in range(1, n):
        below, skip, stride = features[-s], features[-(s + 1)], strides[-s]
        ups.append(_TRANSPOSED[dims](below, skip, stride, stride, bias=settings["conv_bias"]))
        stages.append(ConvStack(n_dec[s - 1], dims, 2 * skip, skip, kernels[-(s + 1)],
                                [1] * dims, settings))
        segs.append(_CONVS[dims](skip, num_classes, 1, 1, 0, bias=True))
    return _Decoder(encoder, ups, stages, segs)


class UNetBase(nn.Module):
    """What both nnU-Net networks share once built: ``encoder`` (images -> skips), ``decoder``
    (skips -> logits), ``strides`` per stage and ``dims``."""

    encoder: nn.Module
    decoder: nn.Module
    strides: list[list[int]]
    dims: int

    def divisor(self) -> list[int]:
        """Per spatial axis, what each input size must be a multiple of (product of strides)."""
        out = [1] * self.dims
        for stride in self.strides:
            out = [a * b for a, b in zip(out, stride, strict=True)]
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class PlainConvUNet(UNetBase):
    """nnU-Net's plain U-Net; arguments are plans.json's ``arch_kwargs`` as plain values.

    features_per_stage: channels of each of the ``n_stages`` stages; kernel_sizes / strides:
    per stage, one entry per spatial axis (network axis order); norm: "instance", "batch" or
    None (eps ``norm_eps``, ``norm_affine``); nonlin: "leaky_relu" (``negative_slope``),
    "relu" or None.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dims: int = 3,
                 features_per_stage: Sequence[int] = (32, 64, 128),
                 kernel_sizes: Sequence | int = 3, strides: Sequence | int = (1, 2, 2),
                 n_conv_per_stage: Sequence[int] | int = 2,
                 n_conv_per_stage_decoder: Sequence[int] | int = 2,
                 conv_bias: bool = True, norm: str | None = "instance", norm_eps: float = 1e-5,
                 norm_affine: bool = True, nonlin: str | None = "leaky_relu",
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        settings = layer_settings(dims, norm, nonlin, conv_bias, norm_eps, norm_affine,
                                  negative_slope)
        features, kernels, self.strides = stage_layout(dims, features_per_stage, kernel_sizes,
                                                       strides)
        n = len(features)
        n_enc = [int(c) for c in per_stage(n_conv_per_stage, n, "n_conv_per_stage")]
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.dims = dims
        encoder = _Encoder([nn.Sequential(ConvStack(n_enc[s], dims,
                                                    in_channels if s == 0 else features[s - 1],
                                                    features[s], kernels[s], self.strides[s],
                                                    settings)) for s in range(n)])
        self.encoder = encoder
        self.decoder = plain_decoder(encoder, features, kernels, self.strides,
                                     n_conv_per_stage_decoder, num_classes, dims, settings)
