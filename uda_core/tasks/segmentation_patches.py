"""Segmentation adaptation of a 3D network: random target patches in, label-free scores out.

Same engine task as :class:`~uda_core.tasks.segmentation.SegmentationTask`, with 3D patches
instead of slices: a batch is ``batch_size`` patches of the bundle's window size (network axis
order, ``window["axes"]``), each centred on a random head voxel (the intensity foreground of
the model grid) of a random target; ``positions`` are the normalised axial positions of the
patch centres; with paired data (ddm) each batch also carries the paired source-modality
patches cut at the same boxes of the paired volumes (same model grid). Under torchrun every
rank draws the same global batch and cuts only its share of the patches
(uda_core.models.distributed). Scores use min(``score_slices``, 8) fixed patches (drawn once
with seed + 1; at most 8 so scoring a 96^3-window network stays cheap; shared among the ranks
like a batch), with the bundle's per-patch class-ratio prior at their centres, and the
consistency score flips them left-right (the network axis of grid x); the preview is the
sliding-window prediction of one whole target. Streamed data (its inputs a
:class:`~uda_core.grid.prepared_store.PreparedStore`) keeps the padded volumes (and paired
volumes) and head voxels on disk beside them too (memory-mapped, read a patch at a time),
with the same batches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uda_core.engine.config import EngineConfig
from uda_core.engine.control import RunControl
from uda_core.engine.events import PreviewEvent
from uda_core.grid.patches import head_voxels, pad_to, patch_box
from uda_core.grid.prepare import probabilities_to_input_grid
from uda_core.grid.prepared_store import ArrayStore, PreparedStore
from uda_core.methods.base import AdaptationMethod, Batch
from uda_core.methods.pseudo_labels import left_right_dim
from uda_core.methods.registry import PATCH_METHODS  # the methods with adapts_3d (tested)
from uda_core.models.brain_region import extracts_brain, label_map
from uda_core.models.distributed import shard_of, world_size
from uda_core.models.inference import predict_grid
from uda_core.tasks.segmentation import SegmentationTask
from uda_core.tasks.segmentation_data import AdaptationData

__all__ = ["PATCH_METHODS", "PatchPool", "PatchSegmentationTask"]


class PatchPool:
    """Each target as a network-order volume (X', Y', Z') padded to at least the window, and
    its head voxels (flat indices into it, int32) to centre patches on; with paired data
    (``data.paired``: each target's source-modality image on the same model grid) the paired
    volume too, in the same order and padding, so one box cuts the same voxels of both. In
    memory, or in ``folder`` on disk (read back memory-mapped) when given."""

    def __init__(self, data: AdaptationData, window: dict, folder: Path | None = None) -> None:
        self.axes = [int(a) for a in window["axes"]]
        self.roi = [int(r) for r in window["roi_size"]]
        self.volumes = self._store(folder, "patch-volume")
        self.heads = self._store(folder, "patch-head")
        self.paired = None if data.paired is None else self._store(folder, "patch-paired")
        self.positions: list[np.ndarray] = []
        for k, model_input in enumerate(data.inputs):
            image = self._network_order(model_input.slices)
            head = np.ravel_multi_index(tuple(head_voxels(image).T), image.shape)
            self.volumes.append(image)
            self.heads.append(head.astype(np.int32))
            self.positions.append(np.asarray(model_input.positions))
            if self.paired is not None:
                assert data.paired is not None
                paired = self._network_order(data.paired[k])
                if paired.shape != image.shape:
                    raise ValueError(f"paired image {k} on the model grid is {paired.shape}, "
                                     f"its target {image.shape}: not on the same grid")
                self.paired.append(paired)
                del paired
            del image, head
        self.z_axis = self.axes.index(2)  # where the grid's z (slice) axis is in network order

    @staticmethod
    def _store(folder: Path | None, name: str) -> list[np.ndarray] | ArrayStore:
        return [] if folder is None else ArrayStore(folder, name)

    def _network_order(self, slices: np.ndarray) -> np.ndarray:
        """Model-grid slices (Z, X, Y) as a network-order volume padded (with its minimum) to
        at least the window, float32."""
        image = np.transpose(np.moveaxis(slices, 0, -1), self.axes)     # (X, Y, Z) reordered
        return np.ascontiguousarray(pad_to(image, self.roi, float(image.min())),
                                    dtype=np.float32)

    def patch(self, v: int, centre: np.ndarray) -> tuple[np.ndarray, float, np.ndarray | None]:
        """(patch (*roi) float32, normalised axial position of its centre, the paired
        volume's patch at the same box or None)."""
        image = self.volumes[v]
        positions = self.positions[v]
        z = int(np.clip(centre[self.z_axis], 0, len(positions) - 1))
        box = patch_box(centre, self.roi, image.shape)
        paired = None if self.paired is None else self.paired[v][box]
        return image[box], float(positions[z]), paired

    def sample(self, rng: np.random.Generator, n: int,
               share: Callable[[np.ndarray], np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """n random patches (n, *roi), their positions (n,) and, with paired data, the paired
        volumes' patches at the same boxes (n, *roi) (else None); with `share` (e.g.
        uda_core.models.distributed.shard_of), only the patches of share(arange(n)) of the
        n drawn (the draws, and so the other ranks' patches, stay those of all n)."""
        picks = []
        for v in rng.integers(0, len(self.volumes), n):
            head = self.heads[int(v)]
            picks.append((int(v), int(head[int(rng.integers(0, len(head)))])))
        keep = np.arange(n) if share is None else share(np.arange(n))
        patches, positions, paired = [], [], []
        for k in keep:
            v, flat = picks[int(k)]
            centre = np.array(np.unravel_index(flat, self.volumes[v].shape))
            patch, position, paired_patch = self.patch(v, centre)
            patches.append(patch)
            positions.append(position)
            if paired_patch is not None:
                paired.append(paired_patch)
        return (np.stack(patches), np.asarray(positions, dtype=np.float32),
                np.stack(paired) if paired else None)


class PatchSegmentationTask(SegmentationTask):
    """SegmentationTask for a 3D bundle (``bundle.window``): see the module doc."""

    def __init__(self, method: AdaptationMethod[Batch], data: AdaptationData,
                 config: EngineConfig, control: RunControl | None = None) -> None:
        window = method.bundle.window
        if window is None:
            raise ValueError("a patch task needs a 3D bundle (with sliding-window settings)")
        self.window = window
        self.flip_dim = left_right_dim(window)   # consistency's left-right flip of a patch
        folder = data.inputs.folder if isinstance(data.inputs, PreparedStore) else None
        self.patches = PatchPool(data, window, folder)
        super().__init__(method, data, config, control)

    def sample_batch(self, rng: np.random.Generator) -> Batch:
        images, positions, paired = self.patches.sample(rng, self.config.batch_size, shard_of)
        return Batch(self._tensor(images), torch.from_numpy(positions).to(self.device),
                     paired_source=None if paired is None else self._tensor(paired))

    def _build_score_set(self) -> dict[str, Any]:
        rng = np.random.default_rng(self.config.seed + 1)
        n = max(1, min(self.config.score_slices, 8))
        n = max(n - n % world_size(), world_size())   # an equal share per rank (averaged)
        images, positions, _ = self.patches.sample(rng, n, shard_of)
        score_set: dict[str, Any] = {"images": self._tensor(images), "positions": positions}
        self._add_prior(score_set)   # a 3D bundle's prior is of patches (by centre position)
        return score_set

    @torch.no_grad()
    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        chunks = [torch.softmax(self.network(images[i:i + 2]).float(), dim=1)
                  for i in range(0, len(images), 2)]
        return torch.cat(chunks)

    @torch.no_grad()
    def preview(self, step: int, index: int) -> PreviewEvent:
        model_input = self.data.inputs[index]
        probs = predict_grid(self.network, model_input, self.device, self.window,
                             batch_size=2, mirror=False)
        on_input = probabilities_to_input_grid(probs, model_input, self.data.volumes[index])
        return PreviewEvent(step, index, probs.argmax(0).astype(np.uint8),
                            label_map(on_input, extracts_brain(self.method.bundle)))
