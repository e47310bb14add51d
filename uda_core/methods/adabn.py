"""AdaBN (Li et al. 2016): re-estimate BatchNorm running statistics on target data.

No gradients: each step feeds a target batch through the network with BatchNorm in train
mode and a cumulative average (momentum None), so after N steps the running mean and variance
are the average over N target batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uda_core.methods.base import INTERNALS, TARGET, AdaptationMethod, Batch
from uda_core.methods.catalogue import SUMMARIES
from uda_core.methods.tent import batchnorm_layers


@dataclass
class AdaBNConfig:
    momentum_after: float = 0.1    # BatchNorm momentum restored when the run ends


class AdaBN(AdaptationMethod[Batch]):
    name = "adabn"
    summary = SUMMARIES["adabn"]
    config_class = AdaBNConfig
    needs = (TARGET, INTERNALS)
    adapts_3d = True
    uses_gradients = False
    default_steps = 40

    def setup(self) -> None:
        self.layers = batchnorm_layers(self.network)
        if not self.layers:
            raise ValueError("adabn needs a network with BatchNorm layers; this one has none")
        for p in self.network.parameters():
            p.requires_grad_(False)
        self._started = False  # statistics are reset at the first step, so the engine's
                               # score before adaptation sees the source statistics

    def train_mode(self) -> None:
        self.network.eval()
        for bn in self.layers:
            bn.train()

    @torch.no_grad()
    def step(self, batch: Batch) -> dict[str, float]:
        if not self._started:
            for bn in self.layers:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over all target batches
            self._started = True
        self.network(batch.target)
        return {}

    def finish(self) -> None:
        for bn in self.layers:
            bn.momentum = self.config.momentum_after
