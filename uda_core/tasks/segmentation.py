"""Segmentation adaptation as an engine task: target slices in, label-free scores out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from uda_core.engine.config import EngineConfig
from uda_core.engine.control import RunControl
from uda_core.engine.events import PreviewEvent
from uda_core.grid.prepare import probabilities_to_input_grid
from uda_core.methods.base import AdaptationMethod, Batch
from uda_core.methods.pseudo_labels import left_right_dim
from uda_core.models.brain_region import extracts_brain, label_map
from uda_core.models.distributed import shard_of, world_size
from uda_core.models.inference import predict_slices
from uda_core.models.prior import prior_for_positions
from uda_core.scores import label_free
from uda_core.tasks.segmentation_data import AdaptationData


class SegmentationTask:
    """Segmentation adaptation on target slices (AdaptationData) as an :class:`EngineTask`.

    Batches: ``batch_size`` random target slices (skipping empty ones if asked), with paired
    source-modality slices and labelled source slices when the data has them; under torchrun
    each process takes its share of that global batch (uda_core.models.distributed), and of
    the score slices. Scores: on
    ``score_slices`` fixed target slices, see :mod:`uda_core.scores.label_free`; reference: Dice
    against reference labels when given. Collapse state: the predicted class shares.
    control: the run's; its cancellation points (RunControl.check) are visited between
    batches of 16 slices while scoring and previewing, so a Stop before the first step ends
    within about a second.
    """

    higher_is_better = label_free.HIGHER_IS_BETTER
    #: the tensor dim of the left-right axis of a batch (B, 1, X, Y): the flip of the
    #: consistency score
    flip_dim = left_right_dim(None)

    def __init__(self, method: AdaptationMethod[Batch], data: AdaptationData,
                 config: EngineConfig, control: RunControl | None = None) -> None:
        self.method = method
        self.control = control or RunControl()
        self.data = data
        self.config = config
        self.device = method.device
        self.network = method.network
        self.num_classes = len(method.bundle.class_names)
        self.pool = data.training_slices(config.skip_empty_slices)
        self.n_previews = len(data.inputs)
        self._score_set = self._build_score_set()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(1).to(self.device)

    def sample_batch(self, rng: np.random.Generator) -> Batch:
        size = self.config.batch_size
        pick = shard_of(rng.integers(0, len(self.pool.volume), size))  # this rank's share
        vols, zs = self.pool.volume[pick], self.pool.slice[pick]
        images = np.stack([self.data.inputs[v].slices[z] for v, z in zip(vols, zs, strict=True)])
        positions = np.array([self.data.inputs[v].positions[z]
                              for v, z in zip(vols, zs, strict=True)], dtype=np.float32)
        batch = Batch(self._tensor(images), torch.from_numpy(positions).to(self.device))
        if self.data.paired is not None:
            paired = np.stack([self.data.paired[v][z] for v, z in zip(vols, zs, strict=True)])
            batch.paired_source = self._tensor(paired)
        if self.data.source_images is not None:
            source_labels = self.data.source_labels
            assert source_labels is not None  # loaded together with source_images
            src = shard_of(rng.integers(0, len(self.data.source_images), size))
            batch.source = self._tensor(self.data.source_images[src])
            batch.source_labels = torch.from_numpy(source_labels[src]).to(self.device)
        return batch

    def _build_score_set(self) -> dict[str, Any]:
        rng = np.random.default_rng(self.config.seed + 1)
        n = min(self.config.score_slices, len(self.pool.volume))
        n -= n % world_size()   # an equal share per rank; the engine averages their scores
        pick = shard_of(np.sort(rng.choice(len(self.pool.volume), n, replace=False)))
        vols, zs = self.pool.volume[pick], self.pool.slice[pick]
        pairs = list(zip(vols, zs, strict=True))
        images = np.stack([self.data.inputs[v].slices[z] for v, z in pairs])
        positions = np.array([self.data.inputs[v].positions[z] for v, z in pairs])
        score_set: dict[str, Any] = {"images": self._tensor(images), "positions": positions}
        if self.data.reference is not None:
            score_set["reference"] = torch.from_numpy(
                np.stack([self.data.reference[v][z] for v, z in pairs]))
        self._add_prior(score_set)
        return score_set

    def _add_prior(self, score_set: dict[str, Any]) -> None:
        """score_set["prior"]: the bundle's class-ratio prior (B, C) at the score set's
        positions, when the bundle has one (for prior_kl and brain_prior_kl)."""
        prior = self.method.bundle.class_ratio_prior
        if prior:
            score_set["prior"] = torch.from_numpy(prior_for_positions(
                prior, score_set["positions"]).astype(np.float32)).to(self.device)

    @torch.no_grad()
    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        chunks = []
        for i in range(0, len(images), 16):
            self.control.check("scoring the model before adaptation")
            chunks.append(torch.softmax(self.network(images[i:i + 16]).float(), dim=1))
        return torch.cat(chunks)

    @torch.no_grad()
    def score(self) -> tuple[dict[str, float], dict[str, float] | None, np.ndarray]:
        """Label-free scores on the fixed score slices, the reference Dice when labels were
        given, and the predicted class shares (for the collapse guard)."""
        images = self._score_set["images"]
        probs = self._probs(images)
        labels = probs.argmax(1)
        flipped = self._probs(images.flip(self.flip_dim)).flip(self.flip_dim).argmax(1)
        brighter = self._probs(images * 1.1 + 0.1).argmax(1)
        scores = {
            "entropy": label_free.mean_entropy(probs),
            "info_max": label_free.information_maximisation(probs),
            "consistency": 0.5 * (label_free.label_agreement(labels, flipped, self.num_classes)
                                  + label_free.label_agreement(labels, brighter,
                                                               self.num_classes)),
            "snd": label_free.soft_neighbourhood_density(
                probs, generator=torch.Generator().manual_seed(self.config.seed)),
        }
        if "prior" in self._score_set:
            scores["prior_kl"] = label_free.prior_divergence(probs, self._score_set["prior"])
            if self.num_classes >= 3:
                scores["brain_prior_kl"] = label_free.brain_prior_divergence(
                    probs, self._score_set["prior"])
        if self.num_classes >= 3:   # one brain class explains nothing
            scores["intensity_fit"] = label_free.intensity_fit(images, labels)
        forward_with_early = getattr(self.network, "forward_with_early", None)
        if getattr(self.method.bundle, "has_early_head", False) and forward_with_early is not None:
            early = torch.cat([forward_with_early(images[i:i + 16])[1].argmax(1)
                               for i in range(0, len(images), 16)])
            scores["early_agreement"] = label_free.label_agreement(labels, early,
                                                                   self.num_classes)
        reference = None
        if "reference" in self._score_set:
            ref = self._score_set["reference"].to(labels.device)
            reference = {"dice": label_free.label_agreement(labels, ref, self.num_classes)}
        return scores, reference, label_free.class_shares(labels, self.num_classes)

    def collapse_reason(self, state: np.ndarray, initial: np.ndarray) -> str | None:
        return label_free.collapse_reason(state, initial)

    @torch.no_grad()
    def preview(self, step: int, index: int) -> PreviewEvent:
        """Current prediction of one target, on its model grid and on its own grid."""
        model_input = self.data.inputs[index]
        probs = predict_slices(self.network, model_input.slices, self.device,
                               on_batch=lambda _: self.control.check("showing the masks"))
        on_input = probabilities_to_input_grid(probs, model_input, self.data.volumes[index])
        return PreviewEvent(step, index, probs.argmax(0).astype(np.uint8),
                            label_map(on_input, extracts_brain(self.method.bundle)))
