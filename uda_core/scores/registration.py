"""Scores of a registration network: label-free ones, for choosing a checkpoint and guarding
against collapse, and the reference scores that need the true displacement, for evaluation
only (:func:`evaluate_registration`).

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

Reference (:func:`evaluate_registration`): accuracy of the argmax label, endpoint error in mm,
Dice of the warped labels, folding (share of head pixels with Jacobian determinant <= 0,
:func:`uda_core.spatial.warp.jacobian_determinant`).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from uda_core.io.intensity import foreground_mask
from uda_core.spatial.warp import jacobian_determinant, warp_image

HIGHER_IS_BETTER = {"discrepancy": False, "entropy": False, "mutual_info": True}

__all__ = ["HIGHER_IS_BETTER", "RegistrationNetwork", "ScoredPairs", "collapse_reason",
           "collapse_state", "evaluate_registration", "head_discrepancy", "mean_entropy",
           "mean_mutual_information", "normalised_mutual_information"]


class ScoredPairs(Protocol):
    """What :func:`evaluate_registration` reads of its pairs (the fields of
    :class:`uda_core.tasks.registration_data.RegPairs`)."""

    fixed: Tensor
    moving: Tensor
    disp_cp: Tensor
    labels_cp: Tensor
    mask_cp: Tensor
    fixed_labels: Tensor
    moving_labels: Tensor

    def __len__(self) -> int: ...

    def subset(self, index) -> ScoredPairs: ...

    def to(self, device) -> ScoredPairs: ...


class RegistrationNetwork(Protocol):
    """(fixed, moving) -> DiscreteRegNet's output dict ("probs", "disp_cp", "disp"), with
    ``eval()``."""

    def __call__(self, fixed: Tensor, moving: Tensor) -> dict[str, Tensor]: ...

    def eval(self): ...


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


#: Below this intensity correlation inside the head, two roughly aligned brain scans have
#: opposite contrasts (T1w against T2w: -0.27 on the demo subjects; T1w against T1w of
#: another subject and scanner: 0.42; against proton density: 0.23).
CONTRAST_MISMATCH_R = 0.1


def intensity_correlation(fixed: np.ndarray, other: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of two arrays of one shape on the voxels of `mask` (NaN when the
    mask holds fewer than two voxels or either is constant there)."""
    f = np.asarray(fixed, dtype=np.float64)[mask]
    o = np.asarray(other, dtype=np.float64)[mask]
    if f.size < 2 or f.std() == 0 or o.std() == 0:
        return float("nan")
    return float(np.corrcoef(f, o)[0, 1])


def pair_similarity(fixed: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How alike two volumes on one grid (X, Y, Z) are on the fixed one's head voxels
    (:func:`uda_core.io.intensity.foreground_mask`): "mutual_info", the normalised mutual
    information (1 = unrelated, 2 = one determines the other; any pair of contrasts), and
    "correlation", Pearson's r (-1..1; negative for opposite contrasts)."""
    mask = foreground_mask(np.asarray(fixed))
    return {"mutual_info": normalised_mutual_information(fixed, other, mask),
            "correlation": intensity_correlation(fixed, other, mask)}


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


# ----------------------------------------------------------------------------- reference


def _score_sums(out: dict[str, Tensor], pairs: ScoredPairs, scale: Tensor,
                n_classes: int) -> dict[str, np.ndarray]:
    mask = pairs.mask_cp
    pred = out["probs"].argmax(1)
    error = ((out["disp_cp"] - pairs.disp_cp) * scale).norm(dim=1)  # (B, Kh, Kw) mm
    still = (pairs.disp_cp * scale).norm(dim=1)  # error of no registration
    warped = warp_image(pairs.moving_labels[:, None], out["disp"], mode="nearest")[:, 0]
    det = jacobian_determinant(out["disp"])
    brain = pairs.fixed_labels[:, :-1, :-1] > 0
    sums = {
        "points": mask.sum(), "points_all": mask.numel(),
        "correct": ((pred == pairs.labels_cp) & mask).sum(),
        "correct_all": (pred == pairs.labels_cp).sum(),
        "correct_identity": ((pairs.labels_cp == pairs.labels_cp.new_tensor(
            out["probs"].shape[1] // 2)) & mask).sum(),
        "epe": (error * mask).sum(), "epe_identity": (still * mask).sum(),
        "folded": ((det <= 0) & brain).sum(), "brain": brain.sum(),
    }
    result = {k: np.asarray(float(v)) for k, v in sums.items()}
    for name, labels in (("after", warped), ("before", pairs.moving_labels)):
        inter = [((labels == c) & (pairs.fixed_labels == c)).sum() for c in range(1, n_classes)]
        size = [(labels == c).sum() + (pairs.fixed_labels == c).sum()
                for c in range(1, n_classes)]
        result[f"inter_{name}"] = np.array([float(v) for v in inter])
        result[f"size_{name}"] = np.array([float(v) for v in size])
    return result


@torch.no_grad()
def evaluate_registration(network: RegistrationNetwork, pairs: ScoredPairs, *,
                          spacing_mm=(2.0, 2.0), batch_size: int = 16, device="cpu",
                          n_classes: int = 4) -> dict[str, float]:
    """Reference scores of ``network`` on ``pairs`` with known displacements (network put in
    eval mode). ``pairs`` is a :class:`uda_core.tasks.registration_data.RegPairs` (or anything
    shaped like it, :class:`ScoredPairs`); ``network`` maps (fixed, moving) to
    DiscreteRegNet's output dict (probs, disp_cp, disp).

    Returns a dict of floats:
    ``accuracy``: share of brain control points (``mask_cp``) whose argmax label (of the mean
    of the heads' softmaxes) equals the true quantised label (the paper's "registration
    accuracy"); ``accuracy_all``: the same over every control point; ``accuracy_identity``:
    share whose true label is zero displacement (what predicting "no motion" scores);
    ``epe_mm``: mean endpoint error at brain control points between the expected displacement
    and the true (unquantised) block-mean displacement, in mm (``spacing_mm`` = (row, column)
    pixel size); ``epe_identity_mm``: the same for zero displacement (the initial error);
    ``dice_before`` / ``dice_after``: mean Dice over tissue classes 1..n_classes-1 of the
    moving labels (before / after warping with the dense field, nearest neighbour) against the
    fixed labels, pooled over all pairs; ``folding``: share of brain pixels whose Jacobian
    determinant is <= 0; ``pairs``: N.
    """
    network.eval()
    scale = torch.tensor([float(spacing_mm[0]), float(spacing_mm[1])],
                         device=device).view(1, 2, 1, 1)
    total: dict[str, np.ndarray] = {}
    for start in range(0, len(pairs), batch_size):
        batch = pairs.subset(slice(start, start + batch_size)).to(device)
        out = network(batch.fixed, batch.moving)
        for key, value in _score_sums(out, batch, scale, n_classes).items():
            total[key] = total.get(key, 0.0) + value
    if not total:
        raise ValueError("no pairs to evaluate")

    def dice(name: str) -> float:
        return float(np.mean(2 * total[f"inter_{name}"] / np.maximum(total[f"size_{name}"], 1)))

    points = max(float(total["points"]), 1.0)
    return {
        "accuracy": float(total["correct"]) / points,
        "accuracy_all": float(total["correct_all"]) / max(float(total["points_all"]), 1.0),
        "accuracy_identity": float(total["correct_identity"]) / points,
        "epe_mm": float(total["epe"]) / points,
        "epe_identity_mm": float(total["epe_identity"]) / points,
        "dice_before": dice("before"),
        "dice_after": dice("after"),
        "folding": float(total["folded"]) / max(float(total["brain"]), 1.0),
        "pairs": float(len(pairs)),
    }
