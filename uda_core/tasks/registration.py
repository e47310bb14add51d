"""The engine task of a registration adaptation run (its data: :mod:`.registration_data`).

A run adapts a registration network trained on T1-T1 pairs (source) to pairs whose moving
image has another contrast (target, e.g. T1 fixed, T2 moving). Both kinds of pairs are made
with the pairs helpers of :mod:`uda_core.tasks.registration_data` from voxel-aligned slices
(:class:`~uda_core.tasks.registration_data.RegSlices`):

- source pair: a fixed T1 slice and the same slice deformed by a random smooth field; the
  field's quantised displacement at every control point supervises (free labels);
- target pair: the fixed T1 slice and the voxel-aligned other-modality slice deformed by a
  random smooth field. Its true displacement is known too, but it serves only the reference
  numbers (accuracy, endpoint error), never training or the choice of a checkpoint.

Fresh random fields are drawn for every batch, from the engine's checkpointed generator (a
resumed run continues exactly); a separate fixed set of target pairs is scored.

Conventions of :mod:`uda_core.spatial.warp`: slices (H, W) on the model grid, images
(B, 1, H, W), displacements in model-grid pixels (dy, dx), control points every ``stride``
pixels, labels ``iy * n + ix``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from uda_core.engine.events import RegPreviewEvent
from uda_core.methods.batches import RegBatch
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.scores import registration as reg_scores
from uda_core.scores.registration import evaluate_registration
from uda_core.spatial.warp import warp_image
from uda_core.tasks.registration_data import RegPairs, RegSlices, pairs_from_slices

__all__ = ["RegistrationTask"]


class RegistrationTask:
    """Registration adaptation data for :class:`uda_core.engine.Engine`.

    Args:
        network: the DiscreteRegNet being adapted (its grid and stride define the labels).
        target: slices whose moving images are another modality (target pairs; also scored).
        source: slices for the T1-T1 source pairs (e.g. ``mono_modal(target)``).
        device: where batches go.
        source_batch, target_batch: pairs per batch.
        score_pairs: number of fixed target pairs scored (the same ones every time).
        seed: seed of the scored pairs' choice and fields.
        reference: also report the scored pairs' accuracy and endpoint error (needs the
            fixed and moving volumes to be truly aligned, as in the demo data).
        max_px, smooth_px: longest displacement and smoothness (pixels) of the random fields.
        spacing_mm: (row, column) model-grid pixel size, for the endpoint error.
    """

    higher_is_better = reg_scores.HIGHER_IS_BETTER
    n_previews = 1   # the scored pair with the most head (engine preview_every; 0: none)

    def __init__(self, network: DiscreteRegNet, target: RegSlices, source: RegSlices,
                 device: torch.device, *, source_batch: int = 4, target_batch: int = 4,
                 score_pairs: int = 32, seed: int = 1, reference: bool = True,
                 max_px: float = 5.0, smooth_px: float = 8.0,
                 spacing_mm: Sequence[float] = (2.0, 2.0)) -> None:
        self.network = network
        self.target, self.source = target, source
        self.device = device
        self.source_batch, self.target_batch = int(source_batch), int(target_batch)
        self.reference = reference
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.pair_args: dict[str, Any] = {  # pairs_from_slices' settings
            "displacement_grid": network.grid, "stride": network.stride, "max_px": max_px,
            "smooth_px": smooth_px}
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(target), min(score_pairs, len(target)), replace=False))
        self.scored: RegPairs = pairs_from_slices(target, pick, rng, **self.pair_args)
        self._preview_pair = int((self.scored.fixed_labels > 0).flatten(1).sum(1).argmax())

    def sample_batch(self, rng: np.random.Generator) -> RegBatch:
        src = pairs_from_slices(self.source, rng.integers(0, len(self.source),
                                                          self.source_batch),
                                rng, **self.pair_args).to(self.device)
        tgt = pairs_from_slices(self.target, rng.integers(0, len(self.target),
                                                          self.target_batch),
                                rng, **self.pair_args).to(self.device)
        return RegBatch(src.fixed, src.moving, src.labels_cp, src.disp_cp, src.mask_cp,
                        tgt.fixed, tgt.moving)

    @torch.no_grad()
    def _predict(self, pairs: RegPairs, chunk: int = 8) -> dict[str, torch.Tensor]:
        keys = ("probs1", "probs2", "probs", "disp")
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for i in range(0, len(pairs), chunk):
            out = self.network(pairs.fixed[i:i + chunk].to(self.device),
                               pairs.moving[i:i + chunk].to(self.device))
            for k in keys:
                parts[k].append(out[k].float().cpu())
        return {k: torch.cat(v) for k, v in parts.items()}

    def score(self) -> tuple[dict[str, float], dict[str, float] | None, np.ndarray]:
        """Label-free scores of the scored pairs (see reg_scores), their reference accuracy
        and endpoint error (mm) when asked, and the collapse state."""
        pairs = self.scored
        out = self._predict(pairs)
        head = (pairs.fixed_labels > 0).numpy()
        scores = {
            "discrepancy": reg_scores.head_discrepancy(out["probs1"], out["probs2"]),
            "entropy": reg_scores.mean_entropy(out["probs"]),
            "mutual_info": reg_scores.mean_mutual_information(pairs.fixed, pairs.moving,
                                                              out["disp"], head),
        }
        reference = None
        if self.reference:
            found = evaluate_registration(self.network, pairs, spacing_mm=self.spacing_mm,
                                          device=self.device)
            reference = {"accuracy": found["accuracy"], "epe_mm": found["epe_mm"]}
        return scores, reference, reg_scores.collapse_state(out["probs"])

    def collapse_reason(self, state: np.ndarray, initial: np.ndarray) -> str | None:
        return reg_scores.collapse_reason(state, initial)

    @torch.no_grad()
    def preview(self, step: int, index: int) -> RegPreviewEvent:
        """The current warp of the scored pair with the most head pixels (``index`` is 0:
        one preview pair)."""
        i = self._preview_pair
        fixed, moving = self.scored.fixed[i:i + 1], self.scored.moving[i:i + 1]
        disp = self.network(fixed.to(self.device), moving.to(self.device))["disp"].float()
        warped = warp_image(moving.to(self.device), disp)
        return RegPreviewEvent(step, index, fixed[0, 0].numpy().copy(),
                               moving[0, 0].numpy().copy(), warped[0, 0].cpu().numpy())
