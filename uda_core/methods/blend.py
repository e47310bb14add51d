"""Blending with a contrast-robust guide ("blend"): no training, a second opinion mixed in.

The adapted model predicts (1 - w) x the user's network's class probabilities + w x those of
a guide that takes the same input (default ``demo:brain-t1-robust``, trained with random
tissue contrasts; :mod:`uda_core.methods.guide`), w = ``guide_weight``
(:class:`~uda_core.models.nets.blend.BlendNet`). Nothing is trained and no source data is
used. The run's step 0 is the user's network alone (w = 0); each of its few steps compares
the two networks' label maps on a batch of target slices and sets w from their agreement so
far: ``guide_weight`` while they agree, ``lost_guide_weight`` (the guide alone by default)
when they agree on less than ``agreement_floor`` of the tissue, which on validation
subjects happened only on a change of contrast (T2w, PD), where the user's network is
confidently wrong. The engine keeps the last step (``default_select_by``: no label-free
score judges a blend); with ``--select-by auto`` its rule decides like for any checkpoint,
and a run that keeps step 0 exports the user's network unchanged.

Where `guided` trains the network towards the guide's answers for many steps, the blend is
that idea's limit, reached at once: on validation subjects 40-45 (whole heads, demo models,
BENCHMARKS.md) it beat both networks on the protocol shift and kept the plain model's skill
on its own contrast, which the guide alone loses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from uda_core.methods.base import INTERNALS, TARGET, AdaptationMethod, Batch
from uda_core.methods.catalogue import SUMMARIES
from uda_core.methods.guide import check_guide, guide_mismatch
from uda_core.methods.guided import DEFAULT_GUIDE
from uda_core.models.nets.blend import BlendNet


@dataclass
class BlendConfig:
    guide: str = DEFAULT_GUIDE     # the guide model (a bundle file or a built-in name); it must
                                   # take the adapted model's input and classes
    guide_weight: float = 0.5      # w, the guide's share of the probabilities, when the two
                                   # networks agree. Validation 40-45, mean Dice (CSF, GM, WM;
                                   # demo:brain-t1 + robust): w 0 / 0.3 / 0.5 / 0.7 / 1: t1
                                   # 0.871 / 0.875 / 0.872 / 0.862 / 0.844, protocol 0.800 /
                                   # 0.813 / 0.819 / 0.819 / 0.810, mprage 0.753 / 0.784 /
                                   # 0.809 / 0.820 / 0.821, highfield 0.690 / 0.711 / 0.734 /
                                   # 0.749 / 0.750: 0.5 is the largest share that does no harm
                                   # on t1 (no shift)
    agreement_floor: float = 0.6   # below this agreement of the two networks' label maps (mean
                                   # Dice of CSF, GM, WM on the run's slices) the user's network
                                   # reads a contrast it was not trained for and the guide gets
                                   # lost_guide_weight. Validation 40-45 (whole volumes): t1
                                   # 0.882, protocol 0.847, mprage 0.811, highfield 0.786, pd
                                   # 0.489, t2 0.000
    lost_guide_weight: float = 1.0  # the guide's share then. Validation: w 0.5 / 0.7 / 1 on
                                   # t2 0.069 / 0.768 / 0.790, pd 0.573 / 0.711 / 0.715


def _spec(bundle: Any) -> dict:
    return {"architecture": bundle.architecture, "arch_kwargs": bundle.full_arch_kwargs()}


class Blend(AdaptationMethod[Batch]):
    name = "blend"
    summary = SUMMARIES["blend"]
    config_class = BlendConfig
    needs = (TARGET, INTERNALS)
    uses_gradients = False
    default_steps = 4   # batches whose label maps the two networks compare (64 slices)
    # No label-free score judges a blend (validation 40-45, step 0 -> 1 while Dice rose on
    # t1, protocol, mprage and highfield by 0.002 / 0.018 / 0.063 / 0.036 on the scored
    # slices): consistency rises for any average of two networks, right or wrong, and
    # prior_kl / brain_prior_kl rose on three of the four (they measure closeness to the
    # plain network's own class shares). The step is kept on the validation evidence: the
    # blend did no harm on t1, the case where the user's network is at its best.
    default_select_by = "last"

    @classmethod
    def unmet_model_needs(cls, bundle: Any) -> list[str]:
        if getattr(bundle, "architecture", None) == "blend":
            return ["a model that is not a blend already"]
        why = guide_mismatch(DEFAULT_GUIDE, bundle)
        return [why] if why else []

    @classmethod
    def check_settings(cls, config: BlendConfig, bundle: Any) -> None:
        if not config.guide:
            raise ValueError(f"blend needs a guide model (guide = a bundle file or "
                             f"{DEFAULT_GUIDE})")
        for name in ("guide_weight", "lost_guide_weight"):
            if not 0.0 < getattr(config, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(config, name)}")
        if not 0.0 <= config.agreement_floor <= 1.0:
            raise ValueError(f"agreement_floor must be in 0..1, got {config.agreement_floor}")
        check_guide(config.guide, bundle)   # read before any target is (ModelError)

    @classmethod
    def wrap_network(cls, network: nn.Module, bundle: Any, config: BlendConfig,
                     device: torch.device) -> nn.Module:
        guide = check_guide(config.guide, bundle)
        return BlendNet.of(network, guide.build_network(device), _spec(bundle), _spec(guide),
                           weight=0.0)

    def setup(self) -> None:
        if not isinstance(self.network, BlendNet):
            raise TypeError("blend adapts the network its wrap_network built")
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.overlap: torch.Tensor | None = None   # per class: 2 |A and B|, |A| + |B|
        self.sizes: torch.Tensor | None = None

    def train_mode(self) -> None:
        self.network.eval()

    @torch.no_grad()
    def step(self, batch: Batch) -> dict[str, float]:
        """Compare the two networks' label maps on `batch` (pooled with the batches before),
        then set the guide's share from their agreement so far."""
        network = self.network
        assert isinstance(network, BlendNet)
        first = network.first(batch.target).argmax(1)
        second = network.second(batch.target).argmax(1)
        overlap, sizes = class_overlap(first, second, self.bundle.num_classes)
        self.overlap = overlap if self.overlap is None else self.overlap + overlap
        self.sizes = sizes if self.sizes is None else self.sizes + sizes
        agreement = pooled_agreement(self.overlap, self.sizes)
        lost = agreement < self.config.agreement_floor
        network.set_weight(self.config.lost_guide_weight if lost else self.config.guide_weight)
        return {"agreement": agreement, "guide_share": float(network.weight)}


def class_overlap(a: torch.Tensor, b: torch.Tensor,
                  num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per foreground class c = 1..C-1 of two label maps: (2 |a = c and b = c|, |a = c| +
    |b = c|), float64 counts (C - 1,)."""
    overlap = torch.zeros(num_classes - 1, dtype=torch.float64)
    sizes = torch.zeros(num_classes - 1, dtype=torch.float64)
    for c in range(1, num_classes):
        x, y = a == c, b == c
        overlap[c - 1] = 2.0 * float((x & y).sum())
        sizes[c - 1] = float(x.sum()) + float(y.sum())
    return overlap, sizes


def pooled_agreement(overlap: torch.Tensor, sizes: torch.Tensor) -> float:
    """Mean Dice over foreground classes from pooled counts; a class neither map holds
    counts as agreeing."""
    dice = torch.where(sizes > 0, overlap / sizes.clamp_min(1.0), torch.ones_like(sizes))
    return float(dice.mean())
