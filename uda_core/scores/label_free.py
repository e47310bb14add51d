"""Scores of a network on unlabelled target slices (METHODS.md section 8).

Used to choose checkpoints, stop early and guard against collapse, with no target labels.
All take softmax probabilities `probs` (B, C, X, Y) unless stated; all return floats.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from uda_core.losses import kl_brain_class_ratio, kl_class_ratio

HIGHER_IS_BETTER = {"entropy": False, "info_max": True, "prior_kl": False,
                    "brain_prior_kl": False, "early_agreement": True, "consistency": True,
                    "snd": True, "intensity_fit": True}
DIVERGENCES = ("prior_kl", "brain_prior_kl")
"""Scores that shrink towards 0 (their gain is relative, see :func:`gain`)."""


def gain(name: str, initial: float, value: float, higher_is_better: bool) -> float:
    """How much better `value` is than `initial` (the step-0 value) for score `name`, in one
    unit for every score: the difference (sign-corrected) for bounded scores, and for
    the DIVERGENCES ("prior_kl", "brain_prior_kl": they shrink towards 0) the relative
    decrease (initial - value) / initial. Positive = better; NaN when either is not finite."""
    if not (math.isfinite(initial) and math.isfinite(value)):
        return float("nan")
    if name in DIVERGENCES:
        return (initial - value) / max(initial, 1e-12)
    return (value - initial) if higher_is_better else (initial - value)


def mean_entropy(probs: torch.Tensor) -> float:
    """Mean pixel entropy divided by log(C): 0 = certain, 1 = uniform."""
    ent = -(probs * torch.log(probs.clamp_min(1e-10))).sum(dim=1)
    return float(ent.mean() / math.log(probs.shape[1]))


def information_maximisation(probs: torch.Tensor) -> float:
    """Entropy of the mean prediction (diversity) minus mean pixel entropy, over log(C)."""
    mean = probs.movedim(1, -1).reshape(-1, probs.shape[1]).mean(dim=0)  # (B, C, *spatial)
    diversity = -(mean * torch.log(mean.clamp_min(1e-10))).sum()
    return float(diversity / math.log(probs.shape[1])) - mean_entropy(probs)


def prior_divergence(probs: torch.Tensor, prior: torch.Tensor) -> float:
    """KL between predicted max-normalised class ratios and the prior ((C,) or (B, C))."""
    return float(kl_class_ratio(probs, prior))


def brain_prior_divergence(probs: torch.Tensor, prior: torch.Tensor) -> float:
    """Like prior_divergence, of the class ratios inside the brain (classes 1.., each slice
    weighted by its brain share: losses.kl_brain_class_ratio), so the background of a
    whole-head slice does not hide a small class such as CSF. Needs C >= 3."""
    return float(kl_brain_class_ratio(probs, prior))


def label_agreement(a: torch.Tensor, b: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over foreground classes between two label maps (B, X, Y); classes absent
    from both count as agreeing."""
    scores = []
    for c in range(1, num_classes):
        x, y = a == c, b == c
        total = int(x.sum()) + int(y.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((x & y).sum()) / total)
    return float(np.mean(scores))


def soft_neighbourhood_density(probs: torch.Tensor, n_pixels: int = 1024,
                               temperature: float = 0.05,
                               generator: torch.Generator | None = None) -> float:
    """SND (Saito et al. 2021) on `n_pixels` random pixels' L2-normalised probability vectors:
    mean entropy of each pixel's softmax similarity to the others (higher = denser clusters)."""
    flat = probs.movedim(1, -1).reshape(-1, probs.shape[1])  # (B, C, *spatial) -> (N, C)
    pick = torch.randperm(flat.shape[0], generator=generator)[:n_pixels].to(flat.device)
    feats = torch.nn.functional.normalize(flat[pick].float(), dim=1)
    sim = feats @ feats.T
    sim.fill_diagonal_(-float("inf"))
    p = torch.softmax(sim / temperature, dim=1)
    return float(-(p * torch.log(p.clamp_min(1e-10))).sum(dim=1).mean())


def intensity_fit(images: torch.Tensor, labels: torch.Tensor, min_pixels: int = 32) -> float:
    """Share of the brain's intensity variance that the predicted tissue classes explain
    (1 - within-class / total sum of squares, the k-means objective of intensity-based
    segmentation such as FSL FAST's), in [0, 1], higher = each predicted tissue is more
    homogeneous. Depends on the image and the label map only, so no method's loss optimises
    it. images (B, 1, *S) or (B, *S) as the network sees them, labels (B, *S) int; the brain
    is labels >= 1 and every item (slice or patch) has its own class means, so a smooth bias
    field across the head does not count; items with fewer than `min_pixels` brain pixels
    are left out. NaN when no item is left or the brain is constant."""
    x = images.reshape(labels.shape[0], -1).double()       # (B, *S) -> (B, N)
    lab = labels.reshape(labels.shape[0], -1)
    brain = lab >= 1
    keep = brain.sum(dim=1) >= min_pixels
    x, lab, brain = x[keep], lab[keep], brain[keep]

    def squares(mask: torch.Tensor) -> torch.Tensor:
        """Sum of squared deviations from the mean of each item's masked pixels, (B,)."""
        n = mask.sum(dim=1).clamp_min(1)
        total = (x * mask).sum(dim=1)
        return (x * x * mask).sum(dim=1) - total * total / n

    total = squares(brain).sum()
    if not keep.any() or float(total) <= 0:
        return float("nan")
    within = sum(squares(lab == c).sum() for c in torch.unique(lab[brain]).tolist())
    return float(1.0 - within / total)


def class_shares(labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Fraction of pixels given to each class, (C,)."""
    counts = torch.bincount(labels.flatten(), minlength=num_classes).double()
    return (counts / counts.sum()).cpu().numpy()


def collapse_reason(shares: np.ndarray, initial_shares: np.ndarray,
                    vanish_ratio: float = 0.1, min_initial: float = 0.005) -> str | None:
    """Why a prediction counts as collapsed, or None: a class that held at least
    `min_initial` of the pixels before adaptation fell below `vanish_ratio` of its share, or
    a single class took (almost) every pixel when it did not before."""
    if shares.max() > 0.995 and initial_shares.max() <= 0.995:
        return "the prediction became constant"
    for c in range(len(shares)):
        if initial_shares[c] >= min_initial and shares[c] < vanish_ratio * initial_shares[c]:
            return f"class {c} vanished ({initial_shares[c]:.1%} -> {shares[c]:.2%} of pixels)"
    return None
