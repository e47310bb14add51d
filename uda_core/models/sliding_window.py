"""3D networks over whole volumes: MONAI's sliding-window inference with our settings.

A 3D bundle's ``window`` (see :class:`uda_core.models.bundle.ModelBundle`) says how: windows of
``roi_size`` voxels overlapping by ``overlap`` (fraction of the window), blended with a
Gaussian (``mode`` "gaussian", MONAI's sigma 0.125 of the window) or uniformly; with
``mirror_axes`` the logits of every flip combination of those axes are averaged first
(nnU-Net's test-time mirroring, 2**len(mirror_axes) network passes per window). ``axes``
orders the model grid's (X, Y, Z) axes as the network takes them.

Progress: ``on_batch(n)`` after each batch of ``n`` windows; raising from it (Ctrl-C's
KeyboardInterrupt, a GUI's cancel) stops at once, nothing half-written.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch


def window_count(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """How many windows MONAI's sliding window visits on an image of ``shape`` voxels
    (network axis order): per axis 1 + ceil((size - roi) / step), step = roi * (1 - overlap)
    (at least 1; the whole axis when the window covers it)."""
    total = 1
    for size, roi in zip(shape, roi_size, strict=True):
        size = max(int(size), int(roi))
        step = int(roi) if size == roi else max(int(roi * (1 - overlap)), 1)
        total *= 1 + math.ceil((size - roi) / step) if size > roi else 1
    return total


def mirrored_logits(network: torch.nn.Module, mirror_axes: Sequence[int]) -> Callable:
    """A predictor: images (B, C, *spatial) -> logits averaged over every combination of flips
    of the network spatial axes ``mirror_axes`` (0-based), the unflipped pass included."""
    dims = [int(a) + 2 for a in mirror_axes]
    combos = [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]

    def predict(images: torch.Tensor) -> torch.Tensor:
        total = None
        for flip in combos:
            x = images.flip(flip) if flip else images
            out = network(x).float()
            out = out.flip(flip) if flip else out
            total = out if total is None else total + out
        assert total is not None
        return total / len(combos)

    return predict


@torch.no_grad()
def predict_volume(network: torch.nn.Module, volume: np.ndarray, window: dict,
                   device: torch.device, batch_size: int = 1,
                   on_batch: Callable[[int], None] | None = None,
                   mirror: bool = True) -> np.ndarray:
    """Softmax probabilities (K, X, Y, Z) float32 for a volume (C, X, Y, Z) on its model grid.

    ``window``: the bundle's sliding-window settings; ``batch_size`` windows per network call;
    ``mirror`` False skips test-time mirroring (2**n times faster).
    """
    from monai.inferers import sliding_window_inference

    network.eval()
    axes = [int(a) for a in window["axes"]]
    roi = [int(r) for r in window["roi_size"]]
    image = np.ascontiguousarray(np.transpose(volume, [0, *(a + 1 for a in axes)]))
    predictor = mirrored_logits(network, window.get("mirror_axes", []) if mirror else [])

    def counted(images: torch.Tensor) -> torch.Tensor:
        out = predictor(images)
        if on_batch is not None:
            on_batch(int(images.shape[0]))
        return out

    inputs = torch.from_numpy(image).unsqueeze(0).to(device)
    logits = sliding_window_inference(inputs, roi, batch_size, counted,
                                      overlap=float(window["overlap"]), mode=window["mode"])
    assert isinstance(logits, torch.Tensor)
    probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    back = np.argsort(axes)  # network axes -> grid (X, Y, Z)
    return np.ascontiguousarray(np.transpose(probs, [0, *(int(a) + 1 for a in back)]))
