"""Masks of the adapted network, written on each target's own grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from uda_core.io.writers import output_stem, write_volume
from uda_core.models.inference import segment_prepared
from uda_core.tasks.segmentation_data import AdaptationData


def write_masks(network: torch.nn.Module, data: AdaptationData,
                targets: Sequence[str | Path], mask_dir: Path,
                device: torch.device, window: dict | None = None,
                brain: bool = False) -> list[Path]:
    """MASK_DIR/<stem>_seg.nii.gz (uint8 labels) for every target, never over an input.
    ``window``: a 3D bundle's sliding-window settings (None: a 2D network); ``brain``: clean
    the non-background region as a brain mask (uda_core.models.brain_region)."""
    mask_dir.mkdir(parents=True, exist_ok=True)
    written = []
    inputs = [Path(t) for t in targets]
    for volume, model_input, target in zip(data.volumes, data.inputs, targets, strict=True):
        labels = segment_prepared(network, model_input, volume, device, window=window,
                                  batch_size=2 if window else 16, brain=brain)
        path = mask_dir / f"{output_stem(Path(target))}_seg.nii.gz"
        written.append(write_volume(labels.with_data(labels.data, source=None), path,
                                    dtype="uint8", overwrite=True, inputs=inputs))
    return written
