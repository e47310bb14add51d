"""The batches registration methods consume (made by :mod:`uda_core.tasks.registration`).

The segmentation batch is :class:`uda_core.methods.base.Batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RegBatch"]


@dataclass
class RegBatch:
    """One MCD batch on the device: labelled source pairs and unlabelled target pairs.

    source_fixed, source_moving: (Bs, 1, H, W); source_labels: (Bs, Kh, Kw) int64 true
    quantised displacements; source_disp_cp: (Bs, 2, Kh, Kw) true block-mean displacement,
    pixels; source_mask_cp: (Bs, Kh, Kw) bool control points inside the head;
    target_fixed, target_moving: (Bt, 1, H, W).
    """

    source_fixed: torch.Tensor
    source_moving: torch.Tensor
    source_labels: torch.Tensor
    source_disp_cp: torch.Tensor
    source_mask_cp: torch.Tensor
    target_fixed: torch.Tensor
    target_moving: torch.Tensor
