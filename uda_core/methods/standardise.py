"""Intensity standardisation as a method: N4 bias-field correction and quantile matching of
each target, no training.

The standardisation itself is part of the model's normalisation (uda_core.models.standardise): the
run prepares the targets with the standardised bundle (``uda adapt --standardise``, implied by
this method), so step 0 already sees standardised scans and the exported bundle standardises
every scan it is applied to. The method changes no weight; its single step only lets the
engine score and record the run like any other. ``--standardise`` combines the same matching
with any other method (adabn, tent, sfda, selftrain).
"""

from __future__ import annotations

from dataclasses import dataclass

from uda_core.methods.base import INTENSITY_REFERENCE, TARGET, AdaptationMethod, Batch
from uda_core.methods.catalogue import SUMMARIES


@dataclass
class StandardiseConfig:
    """No settings: the source percentiles come from the model bundle."""


class Standardise(AdaptationMethod[Batch]):
    name = "standardise"
    summary = SUMMARIES["standardise"]
    config_class = StandardiseConfig
    needs = (TARGET, INTENSITY_REFERENCE)
    uses_gradients = False
    default_steps = 1
    standardises_input = True
    changes_weights = False

    def setup(self) -> None:
        for p in self.network.parameters():
            p.requires_grad_(False)

    def train_mode(self) -> None:
        self.network.eval()

    def step(self, batch: Batch) -> dict[str, float]:
        return {}
