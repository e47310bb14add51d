"""Pseudo-labels for self-training ("selftrain"): view-averaged probabilities, denoised.

Shapes: images (B, 1, X, Y); probabilities (B, C, X, Y); confidences and labels (B, X, Y).
Left-right is the first in-plane axis (X, dim -2 of the images): model grids are RAS, and it
is the flip the engine's consistency score uses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from uda_core.methods.intensity_views import scale_shift

IGNORE = -100  # label of a pixel left out of the loss (torch's default ignore_index)


@torch.no_grad()
def view_averaged_probs(network: nn.Module, images: Tensor, scales: Tensor,
                        shifts: Tensor) -> Tensor:
    """The network's softmax averaged over views of the images: the identity, the left-right
    flip (its output flipped back) and one view ``x * scales[v] + shifts[v]`` per row of
    `scales` and `shifts` ((V, B) each; V may be 0). One forward pass per view (memory of one
    batch; on a CPU, four passes of 16 slices took half the time of one pass of 64).
    Returns float32 (B, C, X, Y)."""
    total = torch.softmax(network(images).float(), dim=1)
    total += torch.softmax(network(images.flip(-2)).float(), dim=1).flip(-2)
    for s, t in zip(scales, shifts, strict=True):
        total += torch.softmax(network(scale_shift(images, s, t)).float(), dim=1)
    return total / (2 + len(scales))


def class_thresholds(confidence: Tensor, labels: Tensor, num_classes: int,
                     quantile: float) -> Tensor:
    """Class-wise adaptive thresholds (C,): for each class, the `quantile`-th quantile
    (linear interpolation) of the confidences of the pixels labelled with it; 0 for a class
    no pixel has (it has nothing to filter)."""
    thresholds = torch.zeros(num_classes, dtype=confidence.dtype, device=confidence.device)
    for c in range(num_classes):
        values = confidence[labels == c]
        if values.numel():
            thresholds[c] = torch.quantile(values.float(), quantile).to(confidence.dtype)
    return thresholds


def denoised_labels(probs: Tensor, confidence_threshold: float,
                    class_quantile: float) -> tuple[Tensor, Tensor]:
    """(labels, keep) from averaged probabilities (B, C, X, Y): labels = argmax (B, X, Y);
    keep (bool, B x X x Y) = confidence (the largest probability) >= `confidence_threshold`
    and >= its class's threshold (:func:`class_thresholds` with `class_quantile`)."""
    confidence, labels = probs.max(dim=1)
    thresholds = class_thresholds(confidence, labels, probs.shape[1], class_quantile)
    keep = (confidence >= confidence_threshold) & (confidence >= thresholds[labels])
    return labels, keep


def balanced_class_weights(labels: Tensor, num_classes: int, max_weight: float) -> Tensor:
    """Class weights (C,) inverse to the classes' shares of `labels` (any shape, int64):
    w_c = (1 / K) / share_c for the K classes present (1 when their shares are equal),
    clipped to [1 / max_weight, max_weight]; 1 for absent classes."""
    counts = torch.bincount(labels.flatten(), minlength=num_classes).float()
    present = counts > 0
    weights = torch.ones(num_classes, device=labels.device)
    if present.any():
        shares = counts[present] / counts.sum()
        raw = 1.0 / (int(present.sum()) * shares)
        weights[present] = raw.clamp(1.0 / max_weight, max_weight)
    return weights
