"""Output-space adversarial adaptation ("adaptsegnet"), the baseline (METHODS.md section 3).

Tsai et al., CVPR 2018, single-level variant. Each step:
1. segmenter: cross-entropy on a labelled source batch plus lambda_adv times the adversarial
   loss that asks the (frozen) discriminator to call the target softmax maps "source";
2. discriminator: the GAN loss on the detached source (label 0) and target (label 1) softmax
   maps, each half-weighted.
Both optimisers follow a poly learning-rate decay over `total_steps`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uda_core.methods.base import (
    INTERNALS,
    SOURCE_LABELLED,
    TARGET,
    AdaptationMethod,
    Batch,
    set_trainable,
)
from uda_core.methods.catalogue import SUMMARIES
from uda_core.models.nets.discriminator import OutputSpaceDiscriminator

GAN_KINDS = ("bce", "lsgan")
SEGMENTER_OPTIMISERS = ("sgd", "adam")
# Defaults that depend on another setting (None in the config means "use this").
_LAMBDA_ADV = {"bce": 0.001, "lsgan": 0.01}          # METHODS.md 3 / reference, single level
_SEGMENTER_LR = {"sgd": 2.5e-4, "adam": 1e-4}        # reference SGD; Adam: our choice
_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 1e-4}          # reference SGD; Adam: as source training


@dataclass
class AdaptSegNetConfig:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "gan": GAN_KINDS, "segmenter_optimiser": SEGMENTER_OPTIMISERS}

    """Settings of output-space adversarial adaptation."""

    # Weight of the adversarial term in the segmenter loss. None: 0.001 for "bce", 0.01 for
    # "lsgan" (METHODS.md 3, the reference's single-level values).
    lambda_adv: float | None = None
    # GAN loss: "bce" (binary cross-entropy on logits, the paper) or "lsgan" (mean squared
    # error on the logits, the reference's LS-GAN option).
    gan: str = "bce"
    # Segmenter optimiser. Our default "adam": the network is pretrained with Adam and we
    # adapt for a few hundred steps on small slices, where the reference's Cityscapes SGD
    # recipe (lr 2.5e-4) barely moves the weights.
    segmenter_optimiser: str = "adam"
    # Segmenter learning rate. None: 1e-4 for Adam (our choice, a tenth of the source
    # training's 1e-3), 2.5e-4 for SGD (reference).
    segmenter_lr: float | None = None
    # SGD momentum (reference 0.9); unused with Adam.
    momentum: float = 0.9
    # Segmenter L2 weight decay. None: 5e-4 for SGD (reference), 1e-4 for Adam (as in our
    # source training).
    weight_decay: float | None = None
    # Discriminator Adam learning rate and betas (reference).
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.99)
    # Width of the discriminator's first conv (channels C -> w -> 2w -> 4w -> 8w -> 1);
    # reference 64. Tests use a tiny one.
    disc_channels: int = 64
    # Poly decay of both learning rates: lr * (1 - step / total_steps) ** poly_power
    # (reference 0.9; 0 keeps them constant).
    poly_power: float = 0.9
    # Steps the decay spans. The engine does not tell methods the run length, so the caller
    # (CLI, GUI) sets it to the engine's `steps`; 300 = EngineConfig's default.
    total_steps: int = 300
    # Domain labels of the discriminator (reference: source 0, target 1).
    source_label: float = 0.0
    target_label: float = 1.0
    # Keep BatchNorm running statistics from target batches only (our choice): scoring and
    # prediction run on target images in eval mode, so the statistics should describe them.
    # False lets source batches update them too, as the reference does.
    target_bn_stats: bool = True

    def __post_init__(self) -> None:
        if self.gan not in GAN_KINDS:
            raise ValueError(f"gan must be one of {', '.join(GAN_KINDS)}, got {self.gan!r}")
        if self.segmenter_optimiser not in SEGMENTER_OPTIMISERS:
            raise ValueError(f"segmenter_optimiser must be one of "
                             f"{', '.join(SEGMENTER_OPTIMISERS)}, got "
                             f"{self.segmenter_optimiser!r}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.lambda_adv is None:
            self.lambda_adv = _LAMBDA_ADV[self.gan]
        if self.segmenter_lr is None:
            self.segmenter_lr = _SEGMENTER_LR[self.segmenter_optimiser]
        if self.weight_decay is None:
            self.weight_decay = _WEIGHT_DECAY[self.segmenter_optimiser]
        # a list when read from JSON
        self.disc_betas = cast(tuple[float, float], tuple(self.disc_betas))


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run forwards inside without changing BatchNorm running statistics (train-mode
    forwards still normalise with the batch statistics, and gradients flow as usual).

    Sets each BatchNorm's momentum to 0 (the running statistics are then updated by a zero
    step inside the kernel; copying saved values back instead would break the backward pass,
    which saves the running statistics) and restores num_batches_tracked afterwards."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not enabled or not norms:
        yield
        return
    saved = [(m, m.momentum, None if m.num_batches_tracked is None
              else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                assert m.num_batches_tracked is not None  # tracked was cloned from it
                m.num_batches_tracked.copy_(tracked)


class AdaptSegNet(AdaptationMethod[Batch]):
    """Adversarial alignment of the softmax output maps of labelled source and unlabelled
    target slices."""

    name = "adaptsegnet"
    summary = SUMMARIES["adaptsegnet"]
    config_class = AdaptSegNetConfig
    needs = (TARGET, SOURCE_LABELLED, INTERNALS)

    def __init__(self, network: nn.Module, bundle: Any, config: AdaptSegNetConfig,
                 device: torch.device) -> None:
        super().__init__(network, bundle, config, device)
        self.discriminator: OutputSpaceDiscriminator | None = None
        self.steps_done = 0

    # --- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.config
        self.discriminator = OutputSpaceDiscriminator(
            self.bundle.num_classes, cfg.disc_channels).to(self.device)
        set_trainable(self.network, True)
        head = getattr(self.network, "early_head", None)
        if isinstance(head, nn.Module):
            set_trainable(head, False)  # not on the segmentation path
        params = [p for p in self.network.parameters() if p.requires_grad]
        segmenter: torch.optim.Optimizer
        if cfg.segmenter_optimiser == "sgd":
            segmenter = torch.optim.SGD(params, lr=cfg.segmenter_lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
        else:
            segmenter = torch.optim.Adam(params, lr=cfg.segmenter_lr,
                                         weight_decay=cfg.weight_decay)
        disc = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr,
                                betas=cfg.disc_betas)
        for optimiser in (segmenter, disc):
            for group in optimiser.param_groups:
                group["base_lr"] = group["lr"]  # before decay; halved by rollbacks
        self.optimisers = [segmenter, disc]
        self.steps_done = 0

    def train_mode(self) -> None:
        self.network.train()
        if self.discriminator is not None:
            self.discriminator.train()

    def extra_modules(self) -> dict[str, nn.Module]:
        return {} if self.discriminator is None else {"discriminator": self.discriminator}

    # --- learning rates -------------------------------------------------------------------

    def _apply_poly_decay(self) -> None:
        cfg = self.config
        t = min(self.steps_done, cfg.total_steps - 1)
        factor = (1.0 - t / cfg.total_steps) ** cfg.poly_power
        for optimiser in self.optimisers:
            for group in optimiser.param_groups:
                group["lr"] = group["base_lr"] * factor

    def on_rollback(self) -> None:
        super().on_rollback()
        for optimiser in self.optimisers:
            for group in optimiser.param_groups:
                group["base_lr"] *= 0.5

    def extra_state(self) -> dict:
        return {**super().extra_state(), "steps_done": self.steps_done}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.steps_done = int(state.get("steps_done", self.steps_done))

    # --- losses ---------------------------------------------------------------------------

    def gan_loss(self, logits: Tensor, label: float) -> Tensor:
        """GAN loss of discriminator logits (B, 1, H', W') against a constant domain label;
        mean over batch and patches."""
        target = torch.full_like(logits, label)
        if self.config.gan == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def segmenter_update(self, batch: Batch) -> tuple[dict[str, float], Tensor, Tensor]:
        """Phase 1: one segmenter update with the discriminator frozen. Returns the loss
        terms and the detached softmax maps of source (B', C, X, Y) and target (B, C, X, Y)."""
        if batch.source is None or batch.source_labels is None:
            raise ValueError("adaptsegnet needs labelled source slices in every batch "
                             "(batch.source and batch.source_labels)")
        cfg = self.config
        assert self.discriminator is not None, "adaptsegnet: call setup() before step()"
        set_trainable(self.discriminator, False)
        with frozen_bn_stats(self.network, cfg.target_bn_stats):
            source_logits = self.network(batch.source)
        seg = F.cross_entropy(source_logits.float(), batch.source_labels)
        target_probs = torch.softmax(self.network(batch.target).float(), dim=1)
        adv = self.gan_loss(self.discriminator(target_probs), cfg.source_label)
        total = seg + cfg.lambda_adv * adv
        self.update(total, self.optimisers[0])
        set_trainable(self.discriminator, True)
        source_probs = torch.softmax(source_logits.detach().float(), dim=1)
        losses = {"seg": seg.item(), "adv": adv.item(), "total": total.item()}
        return losses, source_probs, target_probs.detach()

    def discriminator_update(self, source_probs: Tensor, target_probs: Tensor) -> float:
        """Phase 2: one discriminator update on detached softmax maps (B, C, X, Y) of each
        domain; returns the discriminator loss (the two domains' losses, each halved)."""
        cfg = self.config
        assert self.discriminator is not None, "adaptsegnet: call setup() before step()"
        loss = 0.5 * (self.gan_loss(self.discriminator(source_probs.detach()), cfg.source_label)
                      + self.gan_loss(self.discriminator(target_probs.detach()),
                                      cfg.target_label))
        self.update(loss, self.optimisers[1])
        return loss.item()

    def step(self, batch: Batch) -> dict[str, float]:
        """One AdaptSegNet update. Returns {"seg", "adv", "disc", "total"}; "total" is the
        segmenter's objective seg + lambda_adv * adv."""
        self._apply_poly_decay()
        losses, source_probs, target_probs = self.segmenter_update(batch)
        losses["disc"] = self.discriminator_update(source_probs, target_probs)
        self.steps_done += 1
        return {k: losses[k] for k in ("seg", "adv", "disc", "total")}
