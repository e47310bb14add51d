"""Losses of the adaptation methods, as plain functions of tensors.

Every function takes tensors, returns a scalar (0-d) tensor (except soft_class_ratio, which
returns the (B, C) ratios the KL term compares), is differentiable with respect to its tensor
inputs and keeps no state. Formulas: ../shared/METHODS.md, sections 1 (entropy and
class-ratio KL, "sfda"), 2 (pairwise divergences, "ddm"), 5 (entropy, "tent") and 6 (classifier
discrepancies for registration: L1, sliced Wasserstein, projected EMD).

Shapes: ``probs`` are softmax outputs shaped (B, C, *spatial), with the classes (or displacement
labels) along dim 1 and any number (zero or more) of spatial dimensions after it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "weighted_entropy",
    "soft_class_ratio",
    "kl_class_ratio",
    "pairwise_divergence",
    "discrepancy_l1",
    "sliced_wasserstein",
    "projected_emd",
    "DIVERGENCE_KINDS",
]

# Added inside logarithms of probabilities, as in the sfda reference (METHODS.md section 1).
_LOG_EPS = 1e-10
# Clip for the pairwise divergences (Keras' epsilon, as in the ddm reference).
_CLIP_EPS = 1e-7
DIVERGENCE_KINDS = ("kl", "hellinger", "bhattacharyya")


def _check_probs(probs: Tensor, name: str = "probs", min_dim: int = 2) -> None:
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions (B, C, *spatial), "
            f"got shape {tuple(probs.shape)}"
        )


def _check_same_shape(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _class_weights(class_weights, num_classes: int, like: Tensor) -> Tensor:
    """Class weights as a (C,) tensor with the dtype/device of ``like`` (None -> all ones)."""
    if class_weights is None:
        return torch.ones(num_classes, dtype=like.dtype, device=like.device)
    weights = torch.as_tensor(class_weights, dtype=like.dtype, device=like.device)
    if weights.shape != (num_classes,):
        raise ValueError(
            f"class_weights must have shape ({num_classes},), got {tuple(weights.shape)}"
        )
    return weights


def weighted_entropy(probs: Tensor, class_weights=None) -> Tensor:
    """Class-weighted Shannon entropy of the prediction, mean over batch and pixels.

    L_ent = - sum_{b,c,x} w_c p_c(x) log(p_c(x) + 1e-10) / (B |Omega|)   (METHODS.md 1 and 5).

    Args:
        probs: softmax probabilities, shape (B, C, *spatial).
        class_weights: per-class weights w, shape (C,) (tensor or sequence); None = all ones,
            which gives the plain mean pixel entropy used by Tent.

    Returns:
        Scalar tensor (nats).
    """
    _check_probs(probs)
    weights = _class_weights(class_weights, probs.shape[1], probs)
    shape = (1, -1) + (1,) * (probs.dim() - 2)
    per_element = probs * torch.log(probs + _LOG_EPS) * weights.view(shape)
    pixels = probs.numel() // probs.shape[1]  # B * |Omega|
    return -per_element.sum() / pixels


def soft_class_ratio(probs: Tensor) -> Tensor:
    """Predicted class ratio tau_hat: the max-normalised soft size of each class.

    S_{b,c} = sum_x p_c(x) / max_k p_k(x);  tau_hat_{b,c} = S_{b,c} / sum_c' S_{b,c'}.
    Each pixel's probabilities are divided by that pixel's largest probability (so a confident
    pixel counts fully for its class), summed over pixels, then normalised over classes.

    Args:
        probs: softmax probabilities, shape (B, C, *spatial).

    Returns:
        Tensor of shape (B, C), each row summing to 1 (the only non-scalar output here).
    """
    _check_probs(probs)
    largest = probs.amax(dim=1, keepdim=True).clamp_min(_LOG_EPS)
    sizes = (probs / largest).flatten(start_dim=2).sum(dim=2)  # (B, C)
    return sizes / sizes.sum(dim=1, keepdim=True)


def kl_class_ratio(probs: Tensor, prior, class_weights=None, prior_floor: float = 1e-4) -> Tensor:
    """KL(tau_hat || tau) between the predicted class ratio and a prior, mean over the batch.

    L_kl = (1/B) sum_b sum_c w_c tau_hat_{b,c} (log(tau_hat_{b,c} + 1e-10) - log(tau_{b,c} + 1e-10))
    with tau_hat = soft_class_ratio(probs) (METHODS.md section 1; KL direction as in the
    reference: predicted || prior).

    Prior floor: a zero prior makes log(tau) = log(1e-10) and drives that class to zero, so the
    prior is first clamped to at least ``prior_floor`` and then renormalised to sum to 1 over
    the classes (renormalising also accepts user-edited priors that do not sum to 1). Pass
    ``prior_floor=0`` only when a class is really meant to be absent.

    Args:
        probs: softmax probabilities, shape (B, C, *spatial).
        prior: expected class ratios tau, shape (C,) (same for every image) or (B, C).
        class_weights: per-class weights w of the KL terms, shape (C,); None = all ones (the
            reference weights only the entropy term, which is the None behaviour here).
        prior_floor: smallest prior ratio kept before renormalising (default 1e-4).

    Returns:
        Scalar tensor (nats); 0 when tau_hat equals the (floored, renormalised) prior.
    """
    _check_probs(probs)
    batch, num_classes = probs.shape[:2]
    tau = torch.as_tensor(prior, dtype=probs.dtype, device=probs.device)
    if tau.shape not in ((num_classes,), (batch, num_classes)):
        raise ValueError(
            f"prior must have shape ({num_classes},) or ({batch}, {num_classes}), "
            f"got {tuple(tau.shape)}"
        )
    if prior_floor < 0:
        raise ValueError(f"prior_floor must be >= 0, got {prior_floor}")
    tau = tau.clamp_min(prior_floor)
    tau = tau / tau.sum(dim=-1, keepdim=True).clamp_min(_LOG_EPS)
    tau = tau.expand(batch, num_classes)
    weights = _class_weights(class_weights, num_classes, probs)
    tau_hat = soft_class_ratio(probs)
    terms = tau_hat * (torch.log(tau_hat + _LOG_EPS) - torch.log(tau + _LOG_EPS))
    return (terms * weights).sum() / batch


def kl_brain_class_ratio(probs: Tensor, prior, prior_floor: float = 1e-4) -> Tensor:
    """KL(tau_hat || tau) of the class ratios *inside the brain*: classes 1.. only.

    With S_{b,c} the max-normalised soft sizes of soft_class_ratio, the foreground ratio is
    tau_hat_{b,c} = S_{b,c} / sum_{c'>=1} S_{b,c'} for c >= 1, the prior's likewise (floored,
    then renormalised over c >= 1), and each slice's KL is weighted by its soft foreground
    share w_b = sum_{c>=1} S_{b,c} / sum_c S_{b,c}:

        L = sum_b w_b KL_b / sum_b w_b

    so background (most of a whole-head slice) no longer hides a small class such as CSF
    (its share of a slice is ~3 %, of the brain ~12 %), and slices showing little brain count
    little.

    Args:
        probs: softmax probabilities (B, C, *spatial), C >= 3 (background first).
        prior: class ratios of whole slices, (C,) or (B, C) (as stored in the bundle).

    Returns:
        Scalar tensor (nats).
    """
    _check_probs(probs)
    batch, num_classes = probs.shape[:2]
    if num_classes < 3:
        raise ValueError("a brain class ratio needs at least two foreground classes")
    tau = torch.as_tensor(prior, dtype=probs.dtype, device=probs.device)
    if tau.shape not in ((num_classes,), (batch, num_classes)):
        raise ValueError(f"prior must have shape ({num_classes},) or ({batch}, {num_classes}), "
                         f"got {tuple(tau.shape)}")
    tau = tau.expand(batch, num_classes)[:, 1:].clamp_min(prior_floor)
    tau = tau / tau.sum(dim=1, keepdim=True).clamp_min(_LOG_EPS)
    largest = probs.amax(dim=1, keepdim=True).clamp_min(_LOG_EPS)
    sizes = (probs / largest).flatten(start_dim=2).sum(dim=2)          # (B, C)
    foreground = sizes[:, 1:]
    weight = foreground.sum(dim=1) / sizes.sum(dim=1).clamp_min(_LOG_EPS)   # (B,)
    tau_hat = foreground / foreground.sum(dim=1, keepdim=True).clamp_min(_LOG_EPS)
    per_slice = (tau_hat * (torch.log(tau_hat + _LOG_EPS) - torch.log(tau + _LOG_EPS))).sum(1)
    return (weight * per_slice).sum() / weight.sum().clamp_min(_LOG_EPS)


def pairwise_divergence(p: Tensor, q: Tensor, kind: str = "kl") -> Tensor:
    """Per-pixel divergence between two softmax outputs, mean over batch and pixels (ddm).

    Along dim 1 (the classes), with probabilities clipped to [1e-7, 1] inside logs / roots:
      - "kl":            sum_c p_c log(p_c / q_c)              (KL(p || q), not symmetric)
      - "hellinger":     sum_c (p_c + q_c - 2 sqrt(p_c q_c))   (squared Hellinger, no 1/2)
      - "bhattacharyya": -log sum_c sqrt(p_c q_c)              (Bhattacharyya distance)

    Args:
        p, q: softmax probabilities, same shape (B, C, *spatial).
        kind: one of DIVERGENCE_KINDS.

    Returns:
        Scalar tensor (nats for kl and bhattacharyya).
    """
    _check_probs(p, "p")
    _check_probs(q, "q")
    _check_same_shape(p, q, "p and q")
    if kind == "kl":
        log_ratio = torch.log(p.clamp(_CLIP_EPS, 1.0)) - torch.log(q.clamp(_CLIP_EPS, 1.0))
        per_pixel = (p * log_ratio).sum(dim=1)
    elif kind == "hellinger":
        root = torch.sqrt((p * q).clamp_min(_CLIP_EPS**2))
        per_pixel = (p + q - 2.0 * root).sum(dim=1)
    elif kind == "bhattacharyya":
        coefficient = torch.sqrt((p * q).clamp_min(_CLIP_EPS**2)).sum(dim=1)
        per_pixel = -torch.log(coefficient.clamp_min(_CLIP_EPS))
    else:
        allowed = ", ".join(repr(k) for k in DIVERGENCE_KINDS)
        raise ValueError(f"unknown divergence kind {kind!r}; allowed kinds: {allowed}")
    return per_pixel.mean()


def discrepancy_l1(p1: Tensor, p2: Tensor) -> Tensor:
    """Maximum Classifier Discrepancy's L1 term: mean |p1 - p2| over all elements.

    Args:
        p1, p2: probabilities of the two classifier heads, same shape (B, C, *spatial) (or any
            shape, as long as they match).

    Returns:
        Scalar tensor. It ignores the geometry of the labels: moving mass by one label or by
        five costs the same (see projected_emd).
    """
    _check_same_shape(p1, p2, "p1 and p2")
    return (p1 - p2).abs().mean()


def _as_samples(p: Tensor) -> Tensor:
    """(N, L) stays; (B, L, *spatial) -> (B * prod(spatial), L)."""
    if p.dim() == 2:
        return p
    return p.movedim(1, -1).reshape(-1, p.shape[1])


def sliced_wasserstein(
    p1: Tensor, p2: Tensor, n_projections: int = 128, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced Wasserstein discrepancy between two sets of probability vectors (METHODS.md 6).

    The inputs are read as N samples of L-dimensional vectors; they are projected onto
    ``n_projections`` random unit directions (standard normal, then normalised), each
    projection is sorted across the N samples, and the mean squared difference of the sorted
    projections is returned.

    Args:
        p1, p2: probabilities, same shape, either (N, L) or (B, L, *spatial) (then flattened
            to N = B * prod(spatial) samples of L labels).
        n_projections: number of random directions, drawn afresh on each call.
        generator: torch.Generator for the directions (fixed seed -> deterministic result);
            None uses torch's default generator. The directions are drawn on the generator's
            device and then moved to the inputs' device.

    Returns:
        Scalar tensor.
    """
    _check_probs(p1, "p1")
    _check_probs(p2, "p2")
    _check_same_shape(p1, p2, "p1 and p2")
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections}")
    x1, x2 = _as_samples(p1), _as_samples(p2)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    directions = torch.randn(
        x1.shape[1], n_projections, generator=generator, dtype=x1.dtype, device=draw_device
    ).to(x1.device)
    directions = directions / directions.norm(dim=0, keepdim=True)
    proj1 = torch.sort(x1 @ directions, dim=0).values  # (N, n_projections)
    proj2 = torch.sort(x2 @ directions, dim=0).values
    return ((proj1 - proj2) ** 2).mean()


def _emd_projection(
    grid_shape: tuple[int, int], n_directions: int, dtype: torch.dtype, device
) -> tuple[Tensor, Tensor]:
    """Linear binning of each displacement label's projection, for every direction.

    Returns (matrix, mask): matrix (K, L, n_bins) with matrix[k, l, j] = share of label l's mass
    that lands in bin j along direction k; mask (K, n_bins) = 1 on the bins direction k uses.
    """
    gy, gx = grid_shape
    iy, ix = np.divmod(np.arange(gy * gx), gx)  # row-major: label = iy * gx + ix
    dx = ix - (gx - 1) / 2.0
    dy = iy - (gy - 1) / 2.0
    angles = np.arange(n_directions) * (math.pi / n_directions)  # 0, pi/K, ... < pi
    coords = []
    for theta in angles:
        t = dx * math.cos(theta) + dy * math.sin(theta)
        u = t - t.min()  # bin coordinate: 0 .. extent, in grid steps
        snapped = np.round(u)
        u = np.where(np.abs(u - snapped) < 1e-9, snapped, u)  # exact on axis directions
        coords.append(u)
    n_bins = int(max(np.floor(u.max()) for u in coords)) + 2
    matrix = np.zeros((n_directions, gy * gx, n_bins))
    mask = np.zeros((n_directions, n_bins))
    labels = np.arange(gy * gx)
    for k, u in enumerate(coords):
        lower = np.floor(u).astype(int)
        frac = u - lower
        matrix[k, labels, lower] += 1.0 - frac
        matrix[k, labels, lower + 1] += frac
        last_used = int(np.max(lower + (frac > 0)))
        mask[k, : last_used + 1] = 1.0
    return (
        torch.as_tensor(matrix, dtype=dtype, device=device),
        torch.as_tensor(mask, dtype=dtype, device=device),
    )


def projected_emd(
    p1: Tensor, p2: Tensor, grid_shape: tuple[int, int], n_directions: int = 4
) -> Tensor:
    """Projected Earth Mover's discrepancy between two displacement distributions (METHODS.md 6).

    Our reconstruction of Heinrich & Hansen (MIDL 2020). At each point, p is a histogram over
    L = gy * gx displacement labels on a 2D grid (row-major: label = iy * gx + ix; displacement
    d = (ix - (gx - 1)/2, iy - (gy - 1)/2) in grid steps, centred at 0). For each direction
    theta_k = k pi / K, k = 0..K-1 (K = 2: the two axes; K = 4: axes and both diagonals), the
    mass of each label is put at t = d . (cos theta, sin theta) and split linearly between the
    two neighbouring 1D bins (bins 1 grid step wide, at integer offsets from the smallest
    projected label). Then
        EMD_theta = sum_bins |cumsum(h1) - cumsum(h2)| * bin width   (1D Wasserstein-1),
    averaged over directions, points and batch. On axis directions every label falls on a bin,
    so EMD_theta is the exact Wasserstein-1 distance of the projected histograms. On oblique
    directions each binned CDF value is the true projected CDF averaged over one bin, so the
    result is exact between point masses and otherwise a close lower bound. The last bin adds
    |mass(p1) - mass(p2)|, which is 0 for probabilities. Unlike discrepancy_l1 and
    sliced_wasserstein, the value grows with how far the mass moves on the displacement grid.

    Args:
        p1, p2: probabilities, same shape (B, L, *points) (or (B, L) for one point).
        grid_shape: (gy, gx), the displacement grid; gy * gx must equal L.
        n_directions: K >= 1 projection directions, evenly spaced in [0, pi).

    Returns:
        Scalar tensor in grid steps.
    """
    _check_probs(p1, "p1")
    _check_probs(p2, "p2")
    _check_same_shape(p1, p2, "p1 and p2")
    if len(grid_shape) != 2 or any(int(g) < 1 for g in grid_shape):
        raise ValueError(f"grid_shape must be two positive ints (gy, gx), got {grid_shape}")
    gy, gx = int(grid_shape[0]), int(grid_shape[1])
    if gy * gx != p1.shape[1]:
        raise ValueError(
            f"grid_shape {grid_shape} has {gy * gx} labels but the inputs have {p1.shape[1]}"
        )
    if n_directions < 1:
        raise ValueError(f"n_directions must be >= 1, got {n_directions}")
    matrix, mask = _emd_projection((gy, gx), int(n_directions), p1.dtype, p1.device)
    x1 = p1.reshape(p1.shape[0], p1.shape[1], -1)  # (B, L, P)
    x2 = p2.reshape(p2.shape[0], p2.shape[1], -1)
    h1 = torch.einsum("blp,klj->bpkj", x1, matrix)  # (B, P, K, n_bins)
    h2 = torch.einsum("blp,klj->bpkj", x2, matrix)
    gap = (torch.cumsum(h1, dim=-1) - torch.cumsum(h2, dim=-1)).abs() * mask
    per_direction = gap.sum(dim=-1)  # bin width = 1 grid step
    return per_direction.mean()
