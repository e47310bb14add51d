"""3D patches of a model-grid volume: where a patch lies, and which voxels centre one.

Shared by 3D adaptation (uda_core.tasks.segmentation_patches) and 3D source training's
per-patch class-ratio prior (uda_core.runs.train_segmentation_3d), so both see the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uda_core.io.intensity import foreground_mask


def pad_to(array: np.ndarray, roi: Sequence[int], value: float) -> np.ndarray:
    """``array`` padded at the far end of each axis to at least ``roi`` voxels."""
    pad = [(0, max(0, int(r) - s)) for r, s in zip(roi, array.shape, strict=True)]
    return np.pad(array, pad, mode="constant", constant_values=value)


def patch_box(centre: Sequence[int] | np.ndarray, roi: Sequence[int],
              shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """The ``roi`` box centred on ``centre``, shifted to lie inside ``shape`` (>= roi)."""
    start = [int(np.clip(int(c) - int(r) // 2, 0, int(s) - int(r)))
             for c, r, s in zip(centre, roi, shape, strict=True)]
    (a, b, c), (ra, rb, rc) = start, [int(r) for r in roi]
    return slice(a, a + ra), slice(b, b + rb), slice(c, c + rc)


def head_voxels(image: np.ndarray) -> np.ndarray:
    """(N, 3) indices of the intensity foreground (every voxel when there is none)."""
    head = np.argwhere(foreground_mask(image))
    return head if len(head) else np.argwhere(np.ones(image.shape, dtype=bool))
