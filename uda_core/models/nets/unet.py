"""The 2D segmentation U-Net with an optional head on its early features.

Architecture (METHODS.md sections 1 and 4):

* every block is two [conv3x3 (no bias) + BatchNorm2d + PReLU] layers;
* level 0 (``early_block``) keeps the full resolution and has ``base_channels`` outputs;
* each of the ``depth`` encoder stages halves H and W with a *stride-2 conv3x3* (the first conv
  of its block, chosen over max-pooling so that downsampling is learned, like the reference's
  stride-2 stages) and doubles the channels;
* the decoder upsamples x2 by nearest neighbour, concatenates the encoder features of the same
  level (skip first, then upsampled) and applies a block;
* a final 1x1 conv (with bias) gives ``num_classes`` logits;
* ``early_head`` (optional): conv3x3(base->12) + ReLU + conv3x3(12->8) + ReLU + conv3x3(8->C)
  on the level-0 features, used by the "early" adaptation method and as a label-free score.

The network is TorchScript-scriptable (``torch.jit.script(UNet2D())``), with
``forward_with_early`` exported.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn_prelu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.PReLU(out_channels),
    ]


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Two [conv3x3 no bias + BatchNorm2d + PReLU]; the first conv has ``stride``."""
    return nn.Sequential(
        *_conv_bn_prelu(in_channels, out_channels, stride),
        *_conv_bn_prelu(out_channels, out_channels),
    )


def make_early_head(in_channels: int, num_classes: int) -> nn.Sequential:
    """conv3x3(in->12) + ReLU + conv3x3(12->8) + ReLU + conv3x3(8->num_classes), size kept."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 12, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, num_classes, 3, padding=1),
    )


class UNet2D(nn.Module):
    """2D U-Net: images (B, in_channels, H, W) -> logits (B, num_classes, H, W).

    H and W must be multiples of ``2**depth`` (ValueError otherwise). Channels at level ``l``
    are ``base_channels * 2**l``; the bottom level ``depth`` has H/2**depth x W/2**depth.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        base_channels: int = 16,
        depth: int = 3,
        early_head: bool = True,
    ):
        super().__init__()
        if min(in_channels, num_classes, base_channels) < 1 or depth < 1:
            raise ValueError(
                "UNet2D needs in_channels, num_classes, base_channels >= 1 and depth >= 1"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.base_channels = base_channels
        self.depth = depth
        self.size_multiple = 2**depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.early_block = conv_block(in_channels, base_channels)
        self.down = nn.ModuleList(
            [conv_block(widths[lv], widths[lv + 1], stride=2) for lv in range(depth)]
        )
        # up[i] brings level depth-i back to level depth-1-i.
        self.up = nn.ModuleList(
            [
                conv_block(widths[lv] + widths[lv + 1], widths[lv])
                for lv in reversed(range(depth))
            ]
        )
        self.final = nn.Conv2d(base_channels, num_classes, 1)
        self.early_head = make_early_head(base_channels, num_classes) if early_head else None

    @torch.jit.unused
    def arch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this network (without ``early_head``)."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "base_channels": self.base_channels,
            "depth": self.depth,
        }

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet2D expects input of shape (B, {self.in_channels}, H, W), "
                f"got {list(x.shape)}"
            )
        m = self.size_multiple
        if x.shape[2] % m != 0 or x.shape[3] % m != 0:
            raise ValueError(
                f"UNet2D with depth {self.depth} needs H and W that are multiples of {m}, "
                f"got {x.shape[2]}x{x.shape[3]}; pad or crop the slices"
            )

    def _features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_input(x)
        features = self.early_block(x)
        skips = [features]
        h = features
        for stage in self.down:
            h = stage(h)
            skips.append(h)
        level = len(skips) - 1
        for stage in self.up:
            level -= 1
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = stage(torch.cat([skips[level], h], dim=1))
        return features, self.final(h)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, in_channels, H, W) -> logits (B, num_classes, H, W)."""
        return self._features_and_logits(x)[1]

    @torch.jit.export
    def forward_with_early(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, in, H, W) -> (logits, early_logits), both (B, num_classes, H, W).

        ``early_logits`` come from the early head on the level-0 features. RuntimeError when
        the network was built without a head.
        """
        features, logits = self._features_and_logits(x)
        head = self.early_head
        if head is None:
            raise RuntimeError("this network has no early head (built with early_head=False)")
        return logits, head(features)

