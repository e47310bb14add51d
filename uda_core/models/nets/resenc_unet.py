"""nnU-Net v2's residual-encoder network (ResidualEncoderUNet, the "ResEnc M/L/XL" presets)
rebuilt from a plans.json entry, own layers (see :mod:`uda_core.models.nets.plain_unet` for
why not dynamic-network-architectures itself).

Module tree (the state-dict keys nnU-Net writes, so checkpoints load with ``strict=True``):

* ``encoder.stem.convs.0``: conv (kernel of stage 0, stride 1) -> norm -> non-linearity;
* ``encoder.stages.{s}.blocks.{b}``: ResNet-D basic blocks: ``conv1`` (stride ``strides[s]``
  on the first block of a stage) -> norm -> non-linearity, ``conv2`` -> norm (no
  non-linearity), plus the skip, then ``nonlin2``; the skip of a block that strides or changes
  channels is ``skip`` = [average pooling (kernel = stride), 1x1 conv without bias -> norm]
  (the pooling only when it strides, the conv only when channels change);
* the decoder is the plain U-Net's (``decoder.transpconvs``, ``decoder.stages``,
  ``decoder.seg_layers``), with ``decoder.encoder`` the encoder again.

Images (B, in_channels, *spatial) -> logits (B, num_classes, *spatial); each spatial size must
be divisible by the product of the strides along it (:meth:`divisor`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from uda_core.models.nets.plain_unet import (
    ConvNormNonlin,
    ConvStack,
    UNetBase,
    layer_settings,
    per_stage,
    plain_decoder,
    stage_layout,
)

_POOLS: dict[int, Any] = {2: nn.AvgPool2d, 3: nn.AvgPool3d}


class BasicBlockD(nn.Module):
    """Two convs plus a (pooled, projected) skip, summed, then the non-linearity."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, kernel: list[int],
                 stride: list[int], settings: dict[str, Any]) -> None:
        super().__init__()
        linear = {**settings, "nonlin": None}
        self.conv1 = ConvNormNonlin(dims, in_ch, out_ch, kernel, stride, settings)
        self.conv2 = ConvNormNonlin(dims, out_ch, out_ch, kernel, [1] * dims, linear)
        self.nonlin2 = (ConvNormNonlin.make_nonlin(settings) if settings["nonlin"] is not None
                        else nn.Identity())
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            skip.append(_POOLS[dims](stride, stride))
        if in_ch != out_ch:
            skip.append(ConvNormNonlin(dims, in_ch, out_ch, [1] * dims, [1] * dims,
                                       {**linear, "conv_bias": False}))
        self.skip = nn.Sequential(*skip) if skip else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class _Blocks(nn.Module):
    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class _ResidualEncoder(nn.Module):
    def __init__(self, stem: nn.Module, stages: list[nn.Module]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class ResidualEncoderUNet(UNetBase):
    """nnU-Net's residual-encoder U-Net; arguments are plans.json's ``arch_kwargs`` as plain
    values (as :class:`~uda_core.models.nets.plain_unet.PlainConvUNet`, with
    ``n_blocks_per_stage`` residual blocks per encoder stage instead of convs)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dims: int = 3,
                 features_per_stage: Sequence[int] = (32, 64, 128),
                 kernel_sizes: Sequence | int = 3, strides: Sequence | int = (1, 2, 2),
                 n_blocks_per_stage: Sequence[int] | int = (1, 3, 4),
                 n_conv_per_stage_decoder: Sequence[int] | int = 1,
                 conv_bias: bool = True, norm: str | None = "instance", norm_eps: float = 1e-5,
                 norm_affine: bool = True, nonlin: str | None = "leaky_relu",
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        settings = layer_settings(dims, norm, nonlin, conv_bias, norm_eps, norm_affine,
                                  negative_slope)
        features, kernels, self.strides = stage_layout(dims, features_per_stage, kernel_sizes,
                                                       strides)
        n = len(features)
        n_blocks = [int(c) for c in per_stage(n_blocks_per_stage, n, "n_blocks_per_stage")]
        self.num_classes, self.in_channels, self.dims = int(num_classes), int(in_channels), dims
        ones = [1] * dims
        stem = ConvStack(1, dims, in_channels, features[0], kernels[0], ones, settings)
        stages: list[nn.Module] = []
        for s in range(n):
            width_in = features[0] if s == 0 else features[s - 1]
            stages.append(_Blocks([BasicBlockD(dims, width_in if b == 0 else features[s],
                                               features[s], kernels[s],
                                               self.strides[s] if b == 0 else ones, settings)
                                   for b in range(n_blocks[s])]))
        self.encoder = _ResidualEncoder(stem, stages)
        self.decoder = plain_decoder(self.encoder, features, kernels, self.strides,
                                     n_conv_per_stage_decoder, num_classes, dims, settings)
