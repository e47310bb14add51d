"""Labelled volumes on the model grid, slice by slice (source training, adaptsegnet, ddm)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uda_core.grid.prepare import labels_to_grid, prepare_volume
from uda_core.io.readers import read_labels, read_volume


@dataclass
class SliceSet:
    """Labelled slices on the model grid: images (N, X, Y) float32, labels (N, X, Y) int64,
    positions (N,) normalised axial position of each slice."""

    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray


def load_slices(pairs: Sequence[tuple[Path, Path]], spacing_mm, in_plane_shape,
                normalisation: dict) -> SliceSet:
    """Every (image, labels) pair resampled to the model grid and stacked slice by slice."""
    images, labels, positions = [], [], []
    for image_path, label_path in pairs:
        volume = read_volume(image_path)
        model_input = prepare_volume(volume, spacing_mm, in_plane_shape, normalisation)
        images.append(model_input.slices)
        labels.append(labels_to_grid(read_labels(label_path), model_input))
        positions.append(model_input.positions)
    return SliceSet(np.concatenate(images), np.concatenate(labels), np.concatenate(positions))


def load_slices_for_bundle(bundle: Any, pairs: Sequence[tuple[Path, Path]]) -> SliceSet:
    """Labelled slices on the model grid of an existing bundle."""
    return load_slices(pairs, bundle.spacing_mm, bundle.in_plane_shape, bundle.normalisation)
