"""The fully convolutional output-space discriminator of AdaptSegNet (METHODS.md section 3).

Five 4x4 convolutions with stride 2 and padding 1; channels C -> w -> 2w -> 4w -> 8w -> 1
(w = ``base_channels``, 64 in the paper); LeakyReLU(0.2) after the first four; logits out (no
sigmoid: the losses take logits). Each conv halves H and W (rounding down), so the input must
be at least 32x32: 32x32 gives a 1x1 map, the product's 96x112 slices give 3x3.
"""

from __future__ import annotations

from torch import Tensor, nn

NUM_LAYERS = 5
MIN_SIZE = 2**NUM_LAYERS  # smallest H and W that leave a non-empty output map


class OutputSpaceDiscriminator(nn.Module):
    """Softmax maps (B, in_channels, H, W) -> domain logits (B, 1, H', W').

    H' = H halved (rounding down) five times, the same for W'; each output pixel judges one
    receptive field of the segmentation, so the domain loss is a mean over patches.
    """

    def __init__(self, in_channels: int, base_channels: int = 64,
                 negative_slope: float = 0.2):
        super().__init__()
        if in_channels < 1 or base_channels < 1:
            raise ValueError("OutputSpaceDiscriminator needs in_channels, base_channels >= 1")
        widths = [in_channels] + [base_channels * 2**i for i in range(NUM_LAYERS - 1)] + [1]
        layers: list[nn.Module] = []
        for i in range(NUM_LAYERS):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            if i < NUM_LAYERS - 1:
                layers.append(nn.LeakyReLU(negative_slope, inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, probs: Tensor) -> Tensor:
        """probs (B, in_channels, H, W), H and W >= 32 -> logits (B, 1, H', W')."""
        if probs.dim() != 4 or min(probs.shape[2:]) < MIN_SIZE:
            raise ValueError(f"the discriminator needs input (B, C, H, W) with H, W >= "
                             f"{MIN_SIZE}, got {list(probs.shape)}")
        return self.layers(probs)
