"""Pseudo-labels for self-training ("selftrain"): view-averaged probabilities, denoised.

Shapes: images (B, 1, *S) with S = (X, Y) for 2D slices or the three network axes of a 3D
patch; probabilities (B, C, *S); confidences and labels (B, *S). Flips are given as tensor
dims of the images: on a 2D slice left-right is X (dim 2): model grids are RAS; on a 3D patch
it is wherever the bundle's window axes put grid axis 0 (:func:`left_right_dim`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from uda_core.methods.intensity_views import scale_shift

IGNORE = -100  # label of a pixel left out of the loss (torch's default ignore_index)


def left_right_dim(window: dict | None) -> int:
    """The tensor dim of the left-right axis of a batch (B, 1, *S): 2 for a 2D slice (its X);
    for a 3D patch in network axis order (`window`, a 3D bundle's sliding-window settings,
    whose "axes" list the grid axis each network axis is), 2 + the network axis of grid x."""
    if window is None:
        return 2
    return 2 + [int(a) for a in window["axes"]].index(0)


@torch.no_grad()
def view_averaged_probs(network: nn.Module, images: Tensor, scales: Tensor,
                        shifts: Tensor, flip_dims: Sequence[int] = (2,)) -> Tensor:
    """The network's softmax averaged over views of the images (B, 1, *S): the identity, one
    flip per dim of `flip_dims` (its output flipped back; default the X axis, left-right on
    a 2D slice) and one view ``x * scales[v] + shifts[v]`` per row of `scales` and `shifts`
    ((V, B) each; V may be 0). One forward pass per view (memory of one batch; on a CPU,
    four passes of 16 slices took half the time of one pass of 64).
    Returns float32 (B, C, *S)."""
    total = torch.softmax(network(images).float(), dim=1)
    for dim in flip_dims:
        total += torch.softmax(network(images.flip(dim)).float(), dim=1).flip(dim)
    for s, t in zip(scales, shifts, strict=True):
        total += torch.softmax(network(scale_shift(images, s, t)).float(), dim=1)
    return total / (1 + len(flip_dims) + len(scales))


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
    """(labels, keep) from averaged probabilities (B, C, *S): labels = argmax (B, *S);
    keep (bool, B x S) = confidence (the largest probability) >= `confidence_threshold`
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
