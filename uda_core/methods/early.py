"""Self-training of early features (Sheikh & Schultz, MIDL 2022; METHODS.md section 4).

An auxiliary head on the full-resolution level-0 features (trained on source labels with the
network frozen, shipped in the model bundle) is kept frozen; only the level-0 block is trained,
so that the head's prediction agrees with the final output's softmax (the soft pseudo-label):

    L = - mean_x sum_c softmax(final)_c(x) * log_softmax(head)_c(x)

Choices (the reference's in brackets): pseudo-labels detached by default [not detached,
`detach_pseudo_labels=False` reproduces it]; BatchNorm statistics of the whole network
re-estimated on target data during the run [same: model.train()], `update_all_bn_stats=False`
keeps all but the early block's in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from uda_core.methods.base import EARLY_HEAD, INTERNALS, TARGET, AdaptationMethod, Batch
from uda_core.methods.catalogue import EXPERIMENTAL, SUMMARIES
from uda_core.models.nets.unet import UNet2D


@dataclass
class EarlyConfig:
    lr: float = 1e-3                   # Adam (reference), weight decay 0
    detach_pseudo_labels: bool = True  # our choice: gradients only through the early head path
    update_all_bn_stats: bool = True   # reference: model.train() on target data


class EarlyFeatures(AdaptationMethod[Batch]):
    name = "early"
    summary = SUMMARIES["early"]
    config_class = EarlyConfig
    needs = (TARGET, EARLY_HEAD, INTERNALS)
    default_steps = 300
    circular_scores = ("early_agreement",)  # it trains the early head to agree
    experimental = EXPERIMENTAL["early"]

    @property
    def unet(self) -> UNet2D:
        """The network: a U-Net with an early head (what EARLY_HEAD and INTERNALS ask of the
        bundle)."""
        return cast(UNet2D, self.network)

    def setup(self) -> None:
        for p in self.network.parameters():
            p.requires_grad_(False)
        params = list(self.unet.early_block.parameters())
        for p in params:
            p.requires_grad_(True)
        self.optimisers = [torch.optim.Adam(params, lr=self.config.lr, weight_decay=0.0)]

    def train_mode(self) -> None:
        if self.config.update_all_bn_stats:
            self.network.train()
        else:
            self.network.eval()
            self.unet.early_block.train()
        head = self.unet.early_head
        assert head is not None, "early needs a network with an early head"
        head.eval()

    def step(self, batch: Batch) -> dict[str, float]:
        logits, early_logits = self.unet.forward_with_early(batch.target)
        pseudo = torch.softmax(logits.float(), dim=1)
        if self.config.detach_pseudo_labels:
            pseudo = pseudo.detach()
        loss = -(pseudo * torch.log_softmax(early_logits.float(), dim=1)).sum(dim=1).mean()
        self.update(loss)
        with torch.no_grad():
            agree = (logits.argmax(1) == early_logits.argmax(1)).float().mean()
        return {"soft_ce": loss.item(), "pixel_agreement": agree.item()}
