"""Label-free scores of a registration network, for choosing a checkpoint and guarding
against collapse. (The reference scores that need the true displacement, for evaluation
only, are :func:`uda_core.runs.train_registration.evaluate_registration`'s.)

Conventions of :mod:`uda_core.spatial.warp`: probabilities (B, L, Kh, Kw) over the L
displacement labels at the control points, displacements (B, 2, H, W) in pixels (dy, dx),
images (B, 1, H, W), label maps (B, H, W) with 0 = background.

Label-free (HIGHER_IS_BETTER says which way is better):

- ``discrepancy``: how much the two heads disagree, 0.5 * sum_l |p1 - p2| per control point
  (total variation, 0 = identical, 1 = disjoint), mean over points and pairs. MCD drives the
  generator to lower it on target pairs.
- ``entropy``: mean entropy of the averaged prediction over log(L) (0 certain, 1 uniform).
- ``mutual_info``: normalised mutual information (H(F) + H(W)) / H(F, W) (1 = independent,
  2 = one determines the other) between each fixed image and the moving image warped by the
  network, on the fixed image's head pixels, 32 bins, mean over pairs. A multi-modal image
  similarity, like the Mattes MI SimpleITK optimises; it needs no displacement labels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from uda_core.spatial.warp import warp_image

HIGHER_IS_BETTER = {"discrepancy": False, "entropy": False, "mutual_info": True}

__all__ = ["HIGHER_IS_BETTER", "collapse_reason", "collapse_state", "head_discrepancy",
           "mean_entropy", "mean_mutual_information", "normalised_mutual_information"]


def head_discrepancy(probs1: Tensor, probs2: Tensor) -> float:
    """Total-variation distance of the heads' label distributions, mean over points: 0..1."""
    return float(0.5 * (probs1 - probs2).abs().sum(dim=1).mean())


def mean_entropy(probs: Tensor) -> float:
    """Mean entropy over the label axis (dim 1) divided by log(L): 0 certain, 1 uniform."""
    ent = -(probs * torch.log(probs.clamp_min(1e-10))).sum(dim=1)
    return float(ent.mean() / math.log(probs.shape[1]))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalised_mutual_information(fixed: np.ndarray, warped: np.ndarray, mask: np.ndarray,
                                  bins: int = 32) -> float:
    """(H(F) + H(W)) / H(F, W) of two (H, W) images on the pixels of `mask` (bool (H, W)).

    Intensities are binned between their 1st and 99th percentiles inside the mask (values
    outside go to the end bins). 1 = independent, 2 = one determines the other; NaN when
    the mask is empty.
    """
    f, w = np.asarray(fixed)[mask], np.asarray(warped)[mask]
    if f.size == 0:
        return float("nan")

    def binned(values: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(values, [1, 99])
        scaled = (values - lo) / max(hi - lo, 1e-12) * bins
        return np.clip(scaled.astype(np.int64), 0, bins - 1)

    joint = np.bincount(binned(f) * bins + binned(w), minlength=bins * bins).reshape(bins, bins)
    joint = joint.astype(np.float64)
    h_joint = _entropy(joint.ravel())
    if h_joint == 0.0:
        return 2.0
    return (_entropy(joint.sum(axis=1)) + _entropy(joint.sum(axis=0))) / h_joint


def mean_mutual_information(fixed: Tensor, moving: Tensor, disp: Tensor,
                            masks: np.ndarray) -> float:
    """Mean NMI between fixed (B, 1, H, W) and moving warped by disp (B, 2, H, W), on the
    head masks (B, H, W) bool."""
    warped = warp_image(moving, disp).detach().cpu().numpy()[:, 0]
    images = fixed.detach().cpu().numpy()[:, 0]
    return float(np.nanmean([normalised_mutual_information(f, w, m)
                             for f, w, m in zip(images, warped, masks, strict=True)]))


def collapse_state(probs: Tensor) -> np.ndarray:
    """[share of control points whose argmax is the most common label, mean entropy]."""
    labels = probs.argmax(dim=1).flatten()
    counts = torch.bincount(labels, minlength=probs.shape[1]).double()
    return np.array([float(counts.max() / counts.sum()), mean_entropy(probs)])


def collapse_reason(state: np.ndarray, initial: np.ndarray, constant: float = 0.95,
                    uniform: float = 0.95, margin: float = 0.1) -> str | None:
    """Why a registration prediction counts as collapsed, or None: one displacement label
    took more than `constant` of the control points, or the normalised entropy rose above
    `uniform` (nearly uniform), when before adaptation that value was at least `margin`
    lower."""
    if state[0] > constant and initial[0] <= constant - margin:
        return (f"one displacement label took {state[0]:.1%} of the control points "
                f"(was {initial[0]:.1%})")
    if state[1] > uniform and initial[1] <= uniform - margin:
        return (f"the prediction became uniform (normalised entropy {state[1]:.3f}, was "
                f"{initial[1]:.3f})")
    return None
