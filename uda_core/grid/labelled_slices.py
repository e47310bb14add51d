"""Labelled volumes on the model grid, slice by slice (source training, adaptsegnet, ddm)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uda_core.errors import InputError
from uda_core.grid.prepare import labels_to_grid, prepare_volume
from uda_core.io.intensity import foreground_mask, region_quantiles
from uda_core.io.readers import read_labels, read_volume


@dataclass
class SliceSet:
    """Labelled slices on the model grid: images (N, X, Y) float32, labels (N, X, Y) int64,
    positions (N,) normalised axial position of each slice; volume_quantiles (V, K): each
    volume's normalised intensity percentiles inside its labelled brain (labels > 0) at
    io.intensity.REFERENCE_PERCENTILES (what a trained bundle's intensity reference
    averages), or None; whole_head (V,) bool: the volume shows a whole head, not a
    skull-stripped brain (its labelled brain fills less than WHOLE_HEAD_BELOW of its
    foreground, io.intensity.foreground_mask on its own grid), or None; volume_index (N,)
    int: the volume (0..V-1) each slice comes from, or None."""

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    volume_quantiles: np.ndarray | None = None
    whole_head: np.ndarray | None = None
    volume_index: np.ndarray | None = None

    def volumes_of_kind(self, skull_stripped: bool | None) -> np.ndarray | None:
        """(V,) bool: the volumes of the kind a target is taken to be, whole heads unless
        `skull_stripped` (a bundle's skull_stripped_input); all of them when the set holds
        none of that kind; None (take every volume) when the set does not know which is
        which. A head and a brain alone differ in what their slice positions and normalised
        intensities mean, so statistics meant for targets of one kind come from training
        volumes of that kind."""
        if self.whole_head is None:
            return None
        kind = ~self.whole_head if skull_stripped else self.whole_head
        return kind if kind.any() else np.ones(len(kind), bool)


#: A volume whose labelled brain is less than this share of its (Otsu) foreground is a whole
#: head (demo data: heads 0.53-0.62, skull-stripped brains 1.03: Otsu leaves out the darkest
#: CSF voxels of a brain alone).
WHOLE_HEAD_BELOW = 0.8


def load_slices(pairs: Sequence[tuple[Path, Path]], spacing_mm, in_plane_shape,
                normalisation: dict, num_classes: int | None = None) -> SliceSet:
    """Every (image, labels) pair resampled to the model grid and stacked slice by slice.
    With `num_classes`, a label map holding a label outside 0..num_classes-1 is refused
    (InputError naming it)."""
    images, labels, positions, quantiles, heads = [], [], [], [], []
    index: list[np.ndarray] = []   # each volume's slices' volume number
    for image_path, label_path in pairs:
        label_map = read_labels(label_path)
        if num_classes is not None:
            unknown = np.unique(label_map.data[(label_map.data < 0)
                                               | (label_map.data >= num_classes)])
            if unknown.size:
                raise InputError(f"holds label(s) {', '.join(map(str, unknown[:5].tolist()))} "
                                 f"outside the {num_classes} classes 0..{num_classes - 1}",
                                 label_path)
        volume = read_volume(image_path)
        model_input = prepare_volume(volume, spacing_mm, in_plane_shape, normalisation)
        on_grid = labels_to_grid(label_map, model_input)
        images.append(model_input.slices)
        labels.append(on_grid)
        positions.append(model_input.positions)
        index.append(np.full(len(model_input.slices), len(index)))
        quantiles.append(region_quantiles(model_input.slices, on_grid > 0))
        foreground = int(foreground_mask(volume.data).sum())
        heads.append(int((label_map.data > 0).sum()) < WHOLE_HEAD_BELOW * max(foreground, 1))
    return SliceSet(np.concatenate(images), np.concatenate(labels), np.concatenate(positions),
                    np.stack(quantiles), np.asarray(heads, dtype=bool), np.concatenate(index))


def load_slices_for_bundle(bundle: Any, pairs: Sequence[tuple[Path, Path]]) -> SliceSet:
    """Labelled slices on the model grid of an existing bundle."""
    return load_slices(pairs, bundle.spacing_mm, bundle.in_plane_shape, bundle.normalisation,
                       len(bundle.class_names))
