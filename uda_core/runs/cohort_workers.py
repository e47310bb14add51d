"""What a cohort predict's worker processes do: read a volume and put it on the model grid
(a 2D network's fixed in-plane grid, or a 3D network's grid covering the whole volume); map
class probabilities back onto the input grid and write the mask. Imports no torch, so a
worker process starts light (``spawn``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uda_core.grid.prepare import (
    ModelInput,
    prepare_volume,
    prepare_volume_3d,
    probabilities_to_input_grid,
)
from uda_core.io.readers import read_volume
from uda_core.io.volume import Volume
from uda_core.io.writers import write_volume
from uda_core.models.brain_region import label_map


@dataclass
class GridSpec:
    """What preparing needs from a bundle: spacing (mm, 3), in-plane shape (X, Y) voxels
    (2D networks only), the intensity normalisation (a bundle's ``normalisation`` dict), the
    network's dimensions (2: slices; 3: a grid covering the whole volume) and brain: clean the
    predicted non-background as a brain mask (uda_core.models.brain_region)."""

    spacing_mm: tuple[float, float, float]
    in_plane_shape: tuple[int, int]
    normalisation: dict
    dims: int = 2
    brain: bool = False


@dataclass
class Loaded:
    """A volume read and prepared: its grid and header (no voxels: the input's array is
    dropped once prepared), the model-grid input and the seconds it took."""

    source: Path
    affine: np.ndarray
    shape: tuple[int, int, int]
    header: Any
    meta: dict
    model_input: ModelInput
    seconds: float


def load_prepared(source: Path, spec: GridSpec) -> Loaded:
    """Read `source` and resample it onto its model grid (normalised, and bias-corrected when
    the bundle is standardised; not yet quantile-matched)."""
    start = time.perf_counter()
    volume = read_volume(source)
    if spec.dims == 3:
        model_input = prepare_volume_3d(volume, spec.spacing_mm, spec.normalisation)
    else:
        model_input = prepare_volume(volume, spec.spacing_mm, spec.in_plane_shape,
                                     spec.normalisation)
    return Loaded(source, volume.affine, tuple(volume.shape), volume.header,  # type: ignore[arg-type]
                  volume.meta, model_input, time.perf_counter() - start)


def write_mask(loaded: Loaded, probs: np.ndarray, target: Path, overwrite: bool,
               inputs: tuple[Path, ...] = (), brain: bool = False) -> tuple[np.ndarray, float]:
    """Map probabilities (C, Z, X, Y) on the model grid onto the input grid, write the uint8
    label map to `target` atomically (`brain`: its non-background cleaned as a brain mask,
    uda_core.models.brain_region); returns (voxel count per class (C,), seconds)."""
    start = time.perf_counter()
    grid = Volume(np.empty(loaded.shape, np.uint8), loaded.affine)   # shape and affine only
    labels = label_map(probabilities_to_input_grid(probs, loaded.model_input, grid), brain)
    mask = Volume(labels, loaded.affine, source=None, header=loaded.header,
                  meta={**loaded.meta, "kind": "labels"})
    write_volume(mask, target, dtype="uint8", overwrite=overwrite, inputs=inputs)
    counts = np.bincount(labels.ravel(), minlength=probs.shape[0])[:probs.shape[0]]
    return counts, time.perf_counter() - start
