"""The supervised source loss of the discrete registration net (both heads).

Used by source training (:mod:`uda_core.runs.train_registration`) and by MCD's steps A and B
(:mod:`uda_core.methods.mcd`): the loss a source model was trained with is the one MCD keeps
it right on source pairs with. Shapes: logits (B, L, Kh, Kw) over the L displacement labels
at the control points, labels (B, Kh, Kw) int64 (``quantise`` of the true block-mean
displacement), displacements (B, 2, Kh, Kw) in model-grid pixels (dy, dx).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["control_point_weights", "head_cross_entropy", "source_supervised_loss"]


def control_point_weights(mask_cp: Tensor, background_weight: float) -> Tensor:
    """Weights (B, Kh, Kw) float32: 1 at head control points (``mask_cp`` True), else
    ``background_weight``."""
    return mask_cp.float() * (1.0 - background_weight) + background_weight


def head_cross_entropy(logits: Tensor, labels_cp: Tensor,
                       weight_cp: Tensor | None = None) -> Tensor:
    """Cross-entropy of one head's logits (B, L, Kh, Kw) on labels (B, Kh, Kw) int64.

    Mean over control points, weighted by ``weight_cp`` (B, Kh, Kw) when given. Scalar.
    """
    per_point = F.cross_entropy(logits, labels_cp, reduction="none")
    if weight_cp is None:
        return per_point.mean()
    weight_cp = weight_cp.to(per_point.dtype)
    return (per_point * weight_cp).sum() / weight_cp.sum().clamp_min(1e-8)


def source_supervised_loss(out: dict[str, Tensor], labels_cp: Tensor,
                           disp_cp: Tensor | None = None, *, l2_weight: float = 0.0,
                           weight_cp: Tensor | None = None) -> Tensor:
    """The supervised source loss of both heads (MCD step A; step B's source term).

    ``CE(logits1) + CE(logits2)`` on the quantised labels (B, Kh, Kw), plus, when ``disp_cp``
    (B, 2, Kh, Kw, true displacement in pixels) is given and ``l2_weight`` > 0,
    ``l2_weight * mean |out["disp_cp"] - disp_cp|^2`` (squared pixels; the expected
    displacement under the mean of the heads' softmaxes). ``out`` is ``DiscreteRegNet``'s
    output dict; ``weight_cp`` (B, Kh, Kw) weighs the control points. Scalar tensor.
    """
    loss = (head_cross_entropy(out["logits1"], labels_cp, weight_cp)
            + head_cross_entropy(out["logits2"], labels_cp, weight_cp))
    if disp_cp is not None and l2_weight > 0:
        squared = (out["disp_cp"] - disp_cp).pow(2).sum(dim=1)  # (B, Kh, Kw) px^2
        if weight_cp is None:
            l2 = squared.mean()
        else:
            weight_cp = weight_cp.to(squared.dtype)
            l2 = (squared * weight_cp).sum() / weight_cp.sum().clamp_min(1e-8)
        loss = loss + l2_weight * l2
    return loss
