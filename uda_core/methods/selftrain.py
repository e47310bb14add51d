"""Source-free self-training with a mean teacher (CoTTA / DPL style; METHODS.md, notes).

Only target images. Each step, on one batch of target slices (a 2D network) or random 3D
patches of the window size (a 3D network, uda_core.tasks.segmentation_patches):

1. the teacher (a copy of the network made in setup, never trained by gradients, always in
   eval mode) predicts the batch under several views: the identity, flips (flipped back:
   `flips`, by default the left-right flip, and on a 3D network also the axes its bundle
   mirrors at inference, which it was trained to be mirror-invariant on) and
   `n_intensity_views` small scale/shift changes of the intensities; the softmaxes are
   averaged (:func:`~uda_core.methods.pseudo_labels.view_averaged_probs`);
2. pseudo-label = argmax of the average; a pixel is kept only if its averaged confidence is
   >= `confidence` and >= its class's threshold, the `class_quantile`-th quantile of the
   confidences of the batch's pixels of that class (DPL-style class-wise thresholds);
3. the student (the network, BatchNorm in train mode unless told not) sees a strongly
   changed copy of the batch (gamma, contrast, blur, noise: intensity only, so the labels
   stay aligned; on 3D patches the blur is 3D) and is trained by cross-entropy on the kept
   pixels (one Adam step);
4. the teacher's parameters move to decay * teacher + (1 - decay) * student; its buffers
   (BatchNorm running statistics) are copied from the student.

Choices:

* Teacher buffers copied, not averaged: BatchNorm statistics are not learnt by gradients but
  re-estimated by the student on every target batch (momentum 0.1), so a copy gives the
  teacher current target statistics from the first steps (the AdaBN effect, which alone
  lifts Dice a lot on contrast shifts, BENCHMARKS.md), while an average with decay 0.99 would
  keep the source statistics for most of a 200-step run. The weights they normalise differ
  little between student and teacher (small learning rate, slow average). The student's
  statistics come from its strongly changed batches, as in any training with augmentation.
  With ``batch_statistics=False`` the student stays in eval mode and both networks keep the
  source statistics (on the demo protocol shift, source weights with re-estimated target
  statistics scored Dice 0.705 against the source's 0.736, subjects 40-42).
* Plain cross-entropy (``balance_classes=False``): weights inverse to the class shares move
  the student's decisions towards the up-weighted classes, and the teacher feeds that back
  as pseudo-labels: a drift with nothing source-side to stop it. Balance is in the selection
  instead: the class-wise thresholds keep the same share of every class's pixels (CBST's
  way). ``balance_classes=True`` offers the weighted loss (clipped to `max_class_weight`).
* Scores, previews and checkpoints see the student (the network); the teacher only makes
  pseudo-labels. It is in ``extra_modules()``, so every snapshot (best, last, rollback)
  holds the teacher of its step. `finish` (called after the engine restored the chosen
  snapshot) copies that teacher into the network when ``use_teacher_at_end``: the exported
  model is the averaged teacher of the chosen step (at step 0 the teacher is the source
  network, so "do nothing" stays the source model), while the label-free scores and the
  reference Dice reported during the run are the student's.
* Random draws (views, strong changes, noise) come from two torch.Generators seeded from
  `seed` in setup and saved in ``extra_state``, so a run is reproducible and a resumed run
  continues the same draws.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from uda_core.methods.base import INTERNALS, TARGET, AdaptationMethod, Batch
from uda_core.methods.catalogue import SUMMARIES
from uda_core.methods.guide import check_guide, guide_network
from uda_core.methods.intensity_views import random_scale_shift_amounts, strong_view
from uda_core.methods.pseudo_labels import (
    IGNORE,
    balanced_class_weights,
    denoised_labels,
    left_right_dim,
    view_averaged_probs,
)
from uda_core.methods.tent import batchnorm_layers

PARAM_CHOICES = ("all", "batchnorm")
FLIP_CHOICES = ("auto", "left-right", "all")


def teacher_flip_dims(flips: str, window: dict | None) -> tuple[int, ...]:
    """The tensor dims (of a batch (B, 1, *S)) the teacher's flipped views flip, one view
    each: "left-right" the left-right axis alone; "auto" that and, for a 3D network
    (`window`: its bundle's sliding-window settings), the network axes in its
    ``mirror_axes``; "all" every spatial axis (2 on a slice, 3 on a patch)."""
    lr = left_right_dim(window)
    if flips == "left-right":
        return (lr,)
    if flips == "all":
        return tuple(range(2, 2 + (2 if window is None else len(window["axes"]))))
    mirrored = [] if window is None else [2 + int(a) for a in window.get("mirror_axes", [])]
    return (lr, *sorted(set(mirrored) - {lr}))


def check_guide_weight(weight: float) -> None:
    """ValueError unless 0 <= weight <= 1."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"guide_weight must be in [0, 1], not {weight}")


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher parameters <- decay * teacher + (1 - decay) * student (a linear interpolation,
    exact where the two are equal); teacher buffers <- the student's (copied)."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s.detach().to(t.dtype), 1.0 - decay)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)


@dataclass
class SelfTrainConfig:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"params": PARAM_CHOICES,
                                                     "flips": FLIP_CHOICES}

    lr: float = 1e-5               # Adam. Validation subjects 40-42 (protocol, standardised):
                                   # with source statistics, 1e-4 fell 0.736 -> 0.691 by step
                                   # 25, 1e-5 to 0.730 (every setting tried fell, BENCHMARKS)
    params: str = "all"            # trained parameters: "all", or "batchnorm" (BatchNorm
                                   # scales and shifts only, as tent)
    ema_decay: float = 0.99        # teacher = decay * teacher + (1 - decay) * student after
                                   # each step: a memory of ~100 steps (CoTTA 0.999 over
                                   # far longer runs; ours are a few hundred steps)
    flips: str = "auto"            # teacher views flipped along: "auto" (left-right, and on
                                   # a 3D network also its bundle's mirror axes),
                                   # "left-right", or "all" spatial axes (one view each)
    n_intensity_views: int = 2     # teacher views with scaled/shifted intensities, besides
                                   # the identity and the flips
    view_scale: float = 0.1        # those views: intensities x U(1 - 0.1, 1 + 0.1) ...
    view_shift: float = 0.1        # ... + U(-0.1, 0.1) (z-scored units): small changes
    confidence: float = 0.5        # keep a pixel only if its averaged confidence is at least
                                   # this (below it no class holds a majority of the views'
                                   # probability) ...
    class_quantile: float = 0.25   # ... and at least this quantile of its class's
                                   # confidences in the batch (drops each class's least sure
                                   # quarter; a higher one keeps fewer boundary pixels)
    balance_classes: bool = False  # class weights inverse to the kept pseudo-labels' shares
                                   # (off: plain cross-entropy, see the module notes)
    max_class_weight: float = 5.0  # with balance_classes: weights clipped to [1/5, 5]
    max_gamma: float = 1.5         # student view: gamma log-uniform in [1/1.5, 1.5] on each
                                   # slice's min-max range
    contrast_range: float = 0.25   # student view: contrast x U(0.75, 1.25) about the mean
    noise_std: float = 0.1         # student view: Gaussian noise, std U(0, 0.1) z-scored units
    blur_prob: float = 0.25        # student view: share of slices blurred ...
    max_blur_sigma: float = 1.0    # ... with sigma U(0, 1) pixels
    batch_statistics: bool = False  # student BatchNorm in train mode (target batch
                                   # statistics, also copied to the teacher); off: eval mode,
                                   # the source running statistics kept throughout (default:
                                   # target batch statistics alone cost 0.03 Dice there)
    use_teacher_at_end: bool = True  # export the chosen step's teacher (the averaged model,
                                     # usually the better one); off: the student
    guide: str | None = None       # a second, frozen model (file or built-in name) whose
                                   # view-averaged predictions blend into the pseudo-labels,
                                   # e.g. demo:brain-t1-robust (same classes and input grid;
                                   # uda_core.methods.guide); none = the mean teacher alone
                                   # (the method "guided" has it by default)
    guide_weight: float = 0.5      # pseudo-label probabilities = w x guide + (1 - w) x teacher
    seed: int = 0                  # seed of the views' and the student changes' draws


class SelfTrain(AdaptationMethod[Batch]):
    name = "selftrain"
    summary = SUMMARIES["selftrain"]
    config_class = SelfTrainConfig
    needs = (TARGET, INTERNALS)
    adapts_3d = True
    default_steps = 100
    # its loss rewards confident predictions that agree across augmentations
    circular_scores = ("entropy", "info_max", "snd", "consistency")

    @classmethod
    def check_settings(cls, config: Any, bundle: Any) -> None:
        """The guide's weight, and the guide itself (ModelError naming it when it cannot be
        read or does not take the bundle's input), before any target is read."""
        check_guide_weight(config.guide_weight)
        if config.guide:
            check_guide(config.guide, bundle)

    def setup(self) -> None:
        cfg = self.config
        check_guide_weight(cfg.guide_weight)   # the guide itself: checked by guide_network
        if cfg.params not in PARAM_CHOICES:
            raise ValueError(f"params must be one of {', '.join(PARAM_CHOICES)}, "
                             f"not {cfg.params!r}")
        if not 0.0 <= cfg.ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], not {cfg.ema_decay}")
        if not 0.0 <= cfg.class_quantile <= 1.0:
            raise ValueError(f"class_quantile must be in [0, 1], not {cfg.class_quantile}")
        if cfg.flips not in FLIP_CHOICES:
            raise ValueError(f"flips must be one of {', '.join(FLIP_CHOICES)}, "
                             f"not {cfg.flips!r}")
        if cfg.n_intensity_views < 0:
            raise ValueError(f"n_intensity_views must be >= 0, not {cfg.n_intensity_views}")
        if cfg.max_class_weight < 1.0:
            raise ValueError(f"max_class_weight must be >= 1, not {cfg.max_class_weight}")
        self.guide = guide_network(cfg.guide, self.bundle, self.device) if cfg.guide else None
        self.num_classes = len(self.bundle.class_names)
        self.flip_dims = teacher_flip_dims(
            cfg.flips, self.bundle.window if self.bundle.dims == 3 else None)
        self.teacher = copy.deepcopy(self.network)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        if cfg.params == "batchnorm":
            for p in self.network.parameters():
                p.requires_grad_(False)
            params = [p for bn in batchnorm_layers(self.network)
                      for p in (bn.weight, bn.bias) if p is not None]
            if not params:
                raise ValueError("selftrain with params 'batchnorm' needs a network with "
                                 "BatchNorm layers; this one has none")
        else:
            params = list(self.network.parameters())
        for p in params:
            p.requires_grad_(True)
        self.optimisers = [torch.optim.Adam(params, lr=cfg.lr)]
        self.view_generator = torch.Generator().manual_seed(2 * cfg.seed)
        self.strong_generator = torch.Generator().manual_seed(2 * cfg.seed + 1)

    def train_mode(self) -> None:
        self.network.train(self.config.batch_statistics)  # BatchNorm on target batches
        self.teacher.eval()

    def inference_mode(self) -> None:
        self.network.eval()
        self.teacher.eval()

    def pseudo_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (B, *S) int64, keep (B, *S) bool) from the teacher's view average of
        images (B, 1, *S)."""
        cfg = self.config
        scales, shifts = random_scale_shift_amounts(
            cfg.n_intensity_views, images.shape[0], cfg.view_scale, cfg.view_shift,
            self.view_generator)
        probs = view_averaged_probs(self.teacher, images, scales, shifts, self.flip_dims)
        if self.guide is not None:
            guided = view_averaged_probs(self.guide, images, scales, shifts, self.flip_dims)
            probs = torch.lerp(probs, guided, cfg.guide_weight)
        return denoised_labels(probs, cfg.confidence, cfg.class_quantile)

    def step(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        images = batch.target
        labels, keep = self.pseudo_labels(images)
        with torch.no_grad():
            strong = strong_view(images, self.strong_generator, max_gamma=cfg.max_gamma,
                                 contrast_range=cfg.contrast_range, noise_std=cfg.noise_std,
                                 blur_prob=cfg.blur_prob, max_blur_sigma=cfg.max_blur_sigma)
        kept = int(keep.sum())
        foreground = float((labels[keep] > 0).float().mean()) if kept else 0.0
        if kept == 0:  # nothing sure enough: no update this step
            return {"ce": 0.0, "kept": 0.0, "pseudo_foreground": foreground}
        weights = (balanced_class_weights(labels[keep], self.num_classes, cfg.max_class_weight)
                   if cfg.balance_classes else None)
        logits = self.network(strong).float()
        loss = F.cross_entropy(logits, labels.masked_fill(~keep, IGNORE), weight=weights,
                               ignore_index=IGNORE)
        self.update(loss)
        ema_update(self.teacher, self.network, cfg.ema_decay)
        return {"ce": loss.item(), "kept": kept / keep.numel(),
                "pseudo_foreground": foreground}

    def finish(self) -> None:
        if self.config.use_teacher_at_end:
            self.network.load_state_dict(self.teacher.state_dict())

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "view_generator": self.view_generator.get_state(),
                "strong_generator": self.strong_generator.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        if "view_generator" in state:
            self.view_generator.set_state(state["view_generator"])
            self.strong_generator.set_state(state["strong_generator"])
