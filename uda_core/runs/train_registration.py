"""Supervised source training of the discrete registration net: the work behind `uda reg train`.

Source pairs supervise themselves (METHODS.md section 6): a T1 slice of a demo subject is the
fixed image, the same slice warped by a known random smooth field is the moving image, and the
field, averaged over each control point's stride x stride block and quantised onto the
displacement grid, gives one label per control point. The pieces live in their layers:

- pairs with ground truth: :mod:`uda_core.tasks.registration_data` (``RegSlices``,
  ``RegPairs``, ``load_registration_slices``, ``pairs_from_slices``,
  ``make_registration_pairs``);
- the loss: :func:`uda_core.methods.registration_source.source_supervised_loss` (shared with
  MCD);
- the reference scores: :func:`uda_core.scores.registration.evaluate_registration`;
- the bundle: :func:`uda_core.models.bundle.registration.make_registration_bundle`.

Conventions (those of :mod:`uda_core.spatial.warp`): slices (H, W) = (X, Y) of the model
grid (rows = R, columns = A), displacements in model-grid PIXELS with channels (dy, dx),
``warp_image(moving, disp) ~ fixed``; millimetres only in the scores (``spacing_mm``).

Public API::

    train_registration(slices, config, *, network=None, val_pairs=None, device="cpu",
                       progress=None, cancel=None) -> (DiscreteRegNet, dict)
    train_registration_source(config=None, out_path=None, *, device="cpu", progress=None,
                              cancel=None, template=None, overwrite=False)
                              -> (ModelBundle, dict)

``progress(phase, done, total, scores)`` is called with phase "data", "train", "validate" or
"evaluate"; ``cancel()`` returning True stops training after the current step (the weights
so far are kept, ``summary["status"] == "cancelled"``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from uda_core.grid.model_grid import DEFAULT_GRID
from uda_core.methods.registration_source import control_point_weights, source_supervised_loss
from uda_core.models.bundle import ModelBundle, save_bundle
from uda_core.models.bundle.registration import make_registration_bundle
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.scores.registration import evaluate_registration
from uda_core.spatial.warp import DisplacementGrid
from uda_core.tasks.registration_data import (
    RegPairs,
    RegSlices,
    load_registration_slices,
    make_registration_pairs,
    pairs_from_slices,
)

__all__ = ["EVAL_SUBJECTS", "TRAIN_SUBJECTS", "VAL_SUBJECTS", "RegTrainingConfig",
           "train_registration", "train_registration_source"]

Progress = Callable[[str, int, int, dict], None]  # (phase, done, total, scores)
Cancel = Callable[[], bool]

# Demo subjects (generator seed 0): the same training subjects as demo:brain-t1; 12-13 choose
# the best step; 100-102 are the held-out benchmark subjects; 40-42 are left to adaptation.
TRAIN_SUBJECTS = (*range(0, 12), *range(20, 28))
VAL_SUBJECTS = (12, 13)
EVAL_SUBJECTS = (100, 101, 102)


# ----------------------------------------------------------------------------- training


@dataclass
class RegTrainingConfig:
    """Settings of source training (the defaults made demo:reg-t1)."""

    subjects: tuple[int, ...] = TRAIN_SUBJECTS
    val_subjects: tuple[int, ...] = VAL_SUBJECTS
    eval_subjects: tuple[int, ...] = EVAL_SUBJECTS
    eval_domain: str = "t2"           # the domain-gap check: T1 fixed, this moving
    steps: int = 1200
    batch_size: int = 8
    lr: float = 2e-3                  # Adam, cosine decay to 0
    weight_decay: float = 0.0
    l2_weight: float = 0.05           # on the expected displacement, per squared pixel
    background_weight: float = 0.2    # weight of control points outside the brain
    max_px: float = 5.0               # longest random displacement (pixels of the model grid)
    smooth_px: float = 8.0            # smoothness (Gaussian sigma, pixels) of random fields
    eval_every: int = 250             # steps between validations (best step kept)
    seed: int = 0
    data_seed: int = 0                # the demo generator's seed (uda demo-data --seed)
    radius_px: float = 6.0
    n_per_axis: int = 11
    stride: int = 4
    features: int = 16
    width: int = 8                    # 16 until session 8: half the width, the same accuracy
                                      # after adaptation + MIND io, ~2x faster (BENCHMARKS.md)
    smooth_sigma_px: float = 4.0
    modality: str = "T1w"
    spacing_mm: tuple[float, float, float] = DEFAULT_GRID.spacing_mm       # the model grid
    in_plane_shape: tuple[int, int] = DEFAULT_GRID.in_plane_shape
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_GRID.normalisation))

    def network_kwargs(self) -> dict:
        """Keyword arguments of DiscreteRegNet."""
        return {"radius_px": self.radius_px, "n_per_axis": self.n_per_axis,
                "stride": self.stride, "features": self.features, "width": self.width,
                "smooth_sigma_px": self.smooth_sigma_px}


def train_registration(slices: RegSlices, config: RegTrainingConfig, *,
                       network: DiscreteRegNet | None = None, val_pairs: RegPairs | None = None,
                       device="cpu", progress: Progress | None = None,
                       cancel: Cancel | None = None) -> tuple[DiscreteRegNet, dict]:
    """Train (or fine-tune ``network``) on source pairs made fresh from ``slices`` each step.

    Adam with cosine decay over ``config.steps``; per step ``config.batch_size`` slices, new
    random fields, loss :func:`source_supervised_loss` (brain control points weight 1, the
    others ``background_weight``). With ``val_pairs`` the network is scored every
    ``eval_every`` steps and at the end, and the best step by accuracy is kept.
    Returns the network (eval mode) and a summary (steps_done, status, seconds, loss,
    best_step, val scores).
    """
    device = torch.device(device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = (network or DiscreteRegNet(**config.network_kwargs())).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(config.steps, 1))
    spacing = tuple(config.spacing_mm[:2])
    best: dict[str, Any] = {"accuracy": -1.0, "step": 0, "state": None, "scores": {}}
    losses: list[float] = []
    status, step, start = "completed", 0, time.perf_counter()

    def validate(at: int) -> None:
        assert val_pairs is not None
        scores = evaluate_registration(net, val_pairs, spacing_mm=spacing, device=device)
        if scores["accuracy"] > best["accuracy"]:
            best.update(accuracy=scores["accuracy"], step=at, scores=scores,
                        state={k: v.detach().clone() for k, v in net.state_dict().items()})
        if progress is not None:
            progress("validate", at, config.steps, scores)

    for step in range(1, config.steps + 1):
        if cancel is not None and cancel():
            status, step = "cancelled", step - 1
            break
        net.train()
        index = rng.choice(len(slices), size=min(config.batch_size, len(slices)),
                           replace=False)
        batch = pairs_from_slices(slices, index, rng, displacement_grid=net.grid,
                                  stride=net.stride, max_px=config.max_px,
                                  smooth_px=config.smooth_px).to(device)
        weight = control_point_weights(batch.mask_cp, config.background_weight)
        out = net(batch.fixed, batch.moving)
        loss = source_supervised_loss(out, batch.labels_cp, batch.disp_cp,
                                      l2_weight=config.l2_weight, weight_cp=weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress("train", step, config.steps, {"loss": float(np.mean(losses[-50:]))})
        if val_pairs is not None and (step % max(config.eval_every, 1) == 0
                                      or step == config.steps):
            validate(step)
    if val_pairs is not None and best["state"] is None and step > 0:
        validate(step)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    summary = {"status": status, "steps_done": step,
               "seconds": round(time.perf_counter() - start, 1),
               "loss_first": losses[0] if losses else None,
               "loss_last50": float(np.mean(losses[-50:])) if losses else None,
               "best_step": best["step"] if best["state"] is not None else step,
               "val": best["scores"]}
    return net, summary


def _rounded(scores: dict) -> dict:
    return {k: round(float(v), 4) for k, v in scores.items()}


def train_registration_source(config: RegTrainingConfig | None = None, out_path=None, *,
                              device="cpu", progress: Progress | None = None,
                              cancel: Cancel | None = None, template=None,
                              overwrite: bool = False) -> tuple[ModelBundle, dict]:
    """Train a registration model on demo T1-T1 pairs; score it; optionally save the bundle.

    Training slices come from ``config.subjects`` (T1 only), validation pairs from
    ``config.val_subjects`` (T1-T1, choose the best step), and the final scores from
    ``config.eval_subjects``: T1-T1 pairs and T1-``eval_domain`` pairs (the domain gap that
    adaptation is to close); empty tuples skip them. ``template``: the synthetic anatomy
    (None: resources/template; tests pass a small phantom). The summary (also stored in the
    bundle's provenance) holds the training summary, ``eval_t1_t1`` and ``eval_t1_<domain>``
    scores (see :func:`evaluate_registration`) and the wall time. Saves to ``out_path`` when
    given (ModelError if it exists and not ``overwrite``).
    """
    config = config or RegTrainingConfig()
    start = time.perf_counter()
    grid = DisplacementGrid(config.radius_px, config.n_per_axis)
    pair_kwargs = {"grid": config, "displacement_grid": grid, "stride": config.stride,
                   "max_px": config.max_px, "smooth_px": config.smooth_px,
                   "data_seed": config.data_seed, "template": template}
    slices = load_registration_slices(config.subjects, grid=config,
                                      data_seed=config.data_seed, template=template,
                                      progress=progress)
    val = (make_registration_pairs(config.val_subjects, seed=config.seed + 1, **pair_kwargs)
           if config.val_subjects else None)
    net, summary = train_registration(slices, config, val_pairs=val, device=device,
                                      progress=progress, cancel=cancel)
    summary["val"] = _rounded(summary["val"])
    spacing = tuple(config.spacing_mm[:2])
    if config.eval_subjects:
        for name, domain in (("eval_t1_t1", None),
                             (f"eval_t1_{config.eval_domain}", config.eval_domain)):
            pairs = make_registration_pairs(config.eval_subjects, domain, seed=config.seed + 2,
                                            **pair_kwargs)
            summary[name] = _rounded(evaluate_registration(net, pairs, spacing_mm=spacing,
                                                           device=device))
            if progress is not None:
                progress("evaluate", 1, 1, summary[name])
    summary["training_slices"] = len(slices)
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    provenance = {
        "parent": None, "method": "supervised-source-registration",
        "config": asdict(config),
        "data": {"generator": "uda_core.synth (uda demo-data)", "seed": config.data_seed,
                 "train_subjects": list(config.subjects), "fixed_domain": "t1",
                 "moving": "fixed slice warped by random smooth fields",
                 "val_subjects": list(config.val_subjects),
                 "eval_subjects": list(config.eval_subjects)},
        "summary": summary, "command": " ".join(sys.argv),
    }
    bundle = make_registration_bundle(net, modality=config.modality,
                                      spacing_mm=config.spacing_mm,
                                      in_plane_shape=config.in_plane_shape,
                                      normalisation=config.normalisation, provenance=provenance)
    if out_path is not None:
        save_bundle(bundle, out_path, overwrite=overwrite)
    return bundle, summary


