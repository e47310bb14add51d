"""Brain extraction's clean-up of a predicted label map: one brain, without holes.

A network that segments whole heads (a bundle with ``skull_stripped_input`` False) extracts
the brain as its non-background region. Its slip-ups are islands (a patch of scalp, neck or
face labelled tissue) and pockets (background inside the brain). The standard clean-up of a
brain mask (as after BET or SynthStrip thresholding): keep the largest connected component
of the non-background region (face-connected voxels), fill its enclosed holes in 3D, and give
each filled voxel its most probable tissue class. Bundles that do not record whole-head input
(the user's own networks, which may segment anything) keep the plain argmax.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def extracts_brain(bundle) -> bool:
    """Whether `bundle`'s network segments whole heads, so its non-background is a brain."""
    return getattr(bundle, "skull_stripped_input", None) is False


def label_map(probs: np.ndarray, brain: bool = False) -> np.ndarray:
    """The uint8 label map of class probabilities (C, ...), class 0 background.

    brain: clean the non-background region as a brain mask (largest component, holes
    filled, see the module); False: the plain argmax.
    """
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    if brain and probs.shape[0] > 1:
        clean_brain_region(labels, probs)
    return labels


def clean_brain_region(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """In place: `labels` (...) keeps only its largest non-background component, with its
    enclosed holes labelled by their most probable non-background class of `probs` (C, ...).
    Returns `labels`."""
    region = labels > 0
    components, count = ndimage.label(region)
    if count == 0:
        return labels
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        region = components == int(np.argmax(sizes))
        labels[~region] = 0
    del components
    holes = ndimage.binary_fill_holes(region) & ~region
    if holes.any():
        labels[holes] = 1 + np.argmax(probs[1:, holes], axis=0).astype(np.uint8)
    return labels
