"""Blending with a contrast-robust guide ("blend"): no training, a second opinion mixed in.

The adapted model predicts (1 - w) x the user's network's class probabilities + w x those of
a guide that takes the same input (default ``demo:brain-t1-robust``, trained with random
tissue contrasts; :mod:`uda_core.methods.guide`), w = ``guide_weight``
(:class:`~uda_core.models.nets.blend.BlendNet`). Nothing is trained and no source data is
used. The run's step 0 is the user's network alone (w = 0) and its single step sets w, so
the engine's label-free rule decides between the two like any checkpoint ("first, do no
harm"); a run that keeps step 0 exports the user's network unchanged.

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
    guide_weight: float = 0.5      # w, the guide's share of the probabilities. Validation
                                   # 40-45, mean Dice (CSF, GM, WM; demo:brain-t1 + robust):
                                   # w 0 / 0.3 / 0.5 / 0.7 / 1: t1 0.871 / 0.875 / 0.872 /
                                   # 0.862 / 0.844, protocol 0.800 / 0.813 / 0.819 / 0.819 /
                                   # 0.810, mprage 0.753 / 0.784 / 0.809 / 0.820 / 0.821,
                                   # highfield 0.690 / 0.711 / 0.734 / 0.749 / 0.750: 0.5 is
                                   # the largest share that does no harm on t1 (no shift)


def _spec(bundle: Any) -> dict:
    return {"architecture": bundle.architecture, "arch_kwargs": bundle.full_arch_kwargs()}


class Blend(AdaptationMethod[Batch]):
    name = "blend"
    summary = SUMMARIES["blend"]
    config_class = BlendConfig
    needs = (TARGET, INTERNALS)
    uses_gradients = False
    default_steps = 1
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
        if not 0.0 < config.guide_weight <= 1.0:
            raise ValueError(f"guide_weight must be in (0, 1], got {config.guide_weight}")
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

    def train_mode(self) -> None:
        self.network.eval()

    def step(self, batch: Batch) -> dict[str, float]:
        assert isinstance(self.network, BlendNet)
        self.network.set_weight(self.config.guide_weight)
        return {}
