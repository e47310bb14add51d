"""Source-free entropy minimisation with a class-ratio prior (METHODS.md section 1).

Bateson et al., "Source-Free Domain Adaptation for Image Segmentation" (MICCAI 2020, MedIA 2022).
Needs only the pretrained network and unlabelled target images:

    L = lambda_ent * weighted_entropy(p) + lambda_kl * KL(tau_hat(p) || tau(position))

with tau_hat the max-normalised predicted class ratio of each slice and tau the prior from the
model bundle at the slice's normalised position (or its constant, or one the user gives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from uda_core.losses import kl_brain_class_ratio, kl_class_ratio, weighted_entropy
from uda_core.methods.base import INTERNALS, PRIOR, TARGET, AdaptationMethod, Batch
from uda_core.methods.catalogue import SUMMARIES
from uda_core.methods.tent import batchnorm_layers
from uda_core.models.prior import prior_for_positions

PRIOR_MODES = ("position", "constant", "user")
KL_REGIONS = ("slice", "brain")
PRIOR_MODES = ("position", "constant", "user")
PARAM_CHOICES = ("all", "batchnorm")


@dataclass
class SFDAConfig:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"prior_mode": PRIOR_MODES,
                                                      "kl_region": KL_REGIONS,
                                                      "params": PARAM_CHOICES}

    lambda_ent: float = 1.0        # entropy weight (reference: 1)
    lambda_kl: float = 30.0        # class-ratio KL weight (reference: 1). Validation subjects
                                   # 40-42 (protocol, first demo model): lr 1e-5 with 1 ->
                                   # 0.750, with 30 -> 0.760 at step 150 (source 0.705)
    lr: float = 1e-5               # Adam (reference 1e-6 over 100 epochs); 1e-4 fell 0.724 ->
                                   # 0.674 there, and on whole heads 0.736 -> 0.605 (step 300)
    weight_decay: float = 1e-4     # reference
    background_weight: float = 0.1  # entropy weight of class 0; the other classes share the
                                   # rest equally (reference binary weights: 0.1 / 0.9)
    prior_mode: str = "position"   # "position" (per slice position), "constant", or "user"
    user_prior: list[float] | None = None  # class shares for prior_mode "user" (sum to 1)
    prior_floor: float = 1e-4      # smallest prior share, so no class is driven to zero
    kl_region: str = "slice"       # class ratios of whole slices ("slice", the reference) or
                                   # inside the brain ("brain": classes 1.., so background
                                   # does not hide CSF; losses.kl_brain_class_ratio)
    params: str = "all"            # trained parameters: "all" (reference) or "batchnorm"
                                   # (BatchNorm scales and shifts only, as tent)
    batch_statistics: bool = True  # BatchNorm normalises with target batch statistics while
                                   # adapting (reference: model.train()); False keeps the
                                   # source statistics (eval mode) and trains the weights only


class SFDA(AdaptationMethod[Batch]):
    name = "sfda"
    summary = SUMMARIES["sfda"]
    config_class = SFDAConfig
    needs = (TARGET, PRIOR, INTERNALS)
    adapts_3d = True
    default_steps = 150  # on validation whole heads no step after 25 beat step 0 (BENCHMARKS)
    circular_scores = ("entropy", "info_max", "snd", "prior_kl",   # its two loss terms
                       "brain_prior_kl")

    @classmethod
    def check_settings(cls, config: SFDAConfig, bundle: Any) -> None:
        """prior_mode, kl_region and params among their choices; a user prior of one finite,
        non-negative share per class that sums to one (within 1e-3); a bundle prior for the
        other prior modes."""
        if config.prior_mode not in PRIOR_MODES:
            raise ValueError(f"prior_mode must be one of {', '.join(PRIOR_MODES)}, not "
                             f"{config.prior_mode!r}")
        if config.kl_region not in KL_REGIONS:
            raise ValueError(f"kl_region must be one of {', '.join(KL_REGIONS)}")
        if config.params not in PARAM_CHOICES:
            raise ValueError(f"params must be one of {', '.join(PARAM_CHOICES)}")
        c = len(bundle.class_names)
        if config.prior_mode != "user":
            if config.user_prior is not None:
                raise ValueError("user_prior is only used with prior_mode \"user\"")
            return
        shares = config.user_prior
        if not isinstance(shares, list) or len(shares) != c or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in shares):
            raise ValueError(f"user_prior must list {c} class shares (one per class: "
                             f"{', '.join(bundle.class_names)}), not {shares!r}")
        if not all(math.isfinite(x) and x >= 0 for x in shares):
            raise ValueError(f"user_prior shares must be finite and >= 0, not {shares}")
        if abs(sum(shares) - 1.0) > 1e-3:
            raise ValueError(f"user_prior must sum to 1 (it sums to {sum(shares):.4g})")

    def setup(self) -> None:
        cfg = self.config
        c = len(self.bundle.class_names)
        weights = np.full(c, (1.0 - cfg.background_weight) / max(c - 1, 1))
        weights[0] = cfg.background_weight
        self.class_weights = torch.tensor(weights, dtype=torch.float32, device=self.device)
        if cfg.prior_mode == "user":
            if not cfg.user_prior or len(cfg.user_prior) != c:
                raise ValueError(f"prior_mode 'user' needs user_prior with {c} class shares")
            self.prior = {"constant": list(cfg.user_prior)}
        elif cfg.prior_mode == "constant":
            self.prior = {"constant": self.bundle.class_ratio_prior["constant"]}
        elif cfg.prior_mode == "position":
            self.prior = self.bundle.class_ratio_prior
        else:
            raise ValueError("prior_mode must be 'position', 'constant' or 'user'")
        if cfg.kl_region not in KL_REGIONS:
            raise ValueError(f"kl_region must be one of {', '.join(KL_REGIONS)}")
        if cfg.params not in PARAM_CHOICES:
            raise ValueError(f"params must be one of {', '.join(PARAM_CHOICES)}")
        if cfg.params == "batchnorm":
            for p in self.network.parameters():
                p.requires_grad_(False)
            params = [p for bn in batchnorm_layers(self.network) for p in (bn.weight, bn.bias)
                      if p is not None]
            if not params:
                raise ValueError("params 'batchnorm' needs a network with BatchNorm layers")
            for p in params:
                p.requires_grad_(True)
        else:
            params = list(self.network.parameters())
            for p in params:
                p.requires_grad_(True)
        self.optimisers = [torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999),
                                            weight_decay=cfg.weight_decay)]

    def train_mode(self) -> None:
        self.network.train(self.config.batch_statistics)

    def step(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        probs = torch.softmax(self.network(batch.target).float(), dim=1)
        prior = torch.from_numpy(prior_for_positions(self.prior, batch.positions.cpu().numpy())
                                 .astype(np.float32)).to(probs.device)
        ent = weighted_entropy(probs, self.class_weights)
        if cfg.kl_region == "brain":
            kl = kl_brain_class_ratio(probs, prior, prior_floor=cfg.prior_floor)
        else:
            kl = kl_class_ratio(probs, prior, prior_floor=cfg.prior_floor)
        total = cfg.lambda_ent * ent + cfg.lambda_kl * kl
        self.update(total)
        return {"entropy": ent.item(), "kl_prior": kl.item(), "total": total.item()}
