"""Scores of a segmentation.

Metrics that need reference labels (Dice, HD95, ASSD) are computed only when the user supplies
labels, and never feed training. Distances are in millimetres, using the voxel spacing of the
grid both label maps share.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, ref: np.ndarray, label: int) -> float:
    """Dice overlap of one label in two label maps of equal shape (1.0 when both lack it)."""
    a = pred == label
    b = ref == label
    denom = int(a.sum()) + int(b.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / denom


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of a boolean mask that touch its outside (6-connectivity)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of `a` to the surface of `b`, and back.

    a, b: boolean masks of equal shape, both non-empty; spacing: voxel size per axis in mm.
    Works on the joint bounding box (plus a margin) to stay fast on large volumes.
    """
    both = np.argwhere(a | b)
    lo = np.maximum(both.min(axis=0) - 2, 0)
    hi = np.minimum(both.max(axis=0) + 3, a.shape)
    box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi, strict=True))
    sa, sb = _surface(a[box]), _surface(b[box])
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return dist_to_b[sa], dist_to_a[sb]


def hd95_assd(pred: np.ndarray, ref: np.ndarray, label: int, spacing) -> tuple[float, float]:
    """95th-percentile Hausdorff distance and average symmetric surface distance (mm).

    HD95 = max of the two directed 95th percentiles; ASSD = mean of all surface distances in
    both directions. NaN when either map lacks the label (undefined), 0 when both match.
    """
    a = pred == label
    b = ref == label
    if not a.any() or not b.any():
        return float("nan"), float("nan")
    d_ab, d_ba = surface_distances(a, b, spacing)
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    assd = float(np.concatenate([d_ab, d_ba]).mean())
    return float(hd95), assd


def segmentation_scores(pred: np.ndarray, ref: np.ndarray, class_names, spacing,
                        surface: bool = True) -> dict:
    """Per-class Dice (and HD95/ASSD in mm) for labels 1..C-1, plus their means.

    pred, ref: integer label maps of equal shape on the same grid; class_names: names in
    label-index order (index 0 = background, not scored); spacing: mm per axis.
    Returns {"per_class": {name: {"dice", "hd95_mm", "assd_mm"}}, "mean_dice", "mean_hd95_mm",
    "mean_assd_mm"}.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {ref.shape}")
    per_class = {}
    for label, name in enumerate(class_names):
        if label == 0:
            continue
        entry = {"dice": dice(pred, ref, label)}
        if surface:
            entry["hd95_mm"], entry["assd_mm"] = hd95_assd(pred, ref, label, spacing)
        per_class[name] = entry
    result = {"per_class": per_class,
              "mean_dice": float(np.mean([v["dice"] for v in per_class.values()]))}
    if surface:
        for key in ("hd95_mm", "assd_mm"):
            values = [v[key] for v in per_class.values() if np.isfinite(v[key])]
            result[f"mean_{key}"] = float(np.mean(values)) if values else float("nan")
    return result
