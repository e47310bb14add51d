"""Supervised source training of the discrete registration net, and the pairs and scores of it.

Source pairs supervise themselves (METHODS.md section 6): a T1 slice of a demo subject is the
fixed image, the same slice warped by a known random smooth field is the moving image, and the
field, averaged over each control point's stride x stride block and quantised onto the
displacement grid, gives one label per control point. Target pairs are made the same way with
the moving image taken from the subject's voxel-aligned T2 slice, so their truth is known too.

Conventions (those of :mod:`uda_core.spatial.warp`): slices (H, W) = (X, Y) of the model
grid (rows = R, columns = A), displacements in model-grid PIXELS with channels (dy, dx),
``warp_image(moving, disp) ~ fixed``; millimetres only in the scores (``spacing_mm``).

Public API (also what ``registration/mcd.py``, ``reg_data.py`` and ``bench.py`` use)::

    # (a) a registration bundle -> network  (uda_core.models.bundle.registration)
    load_registration_model(model, device="cpu") -> (ModelBundle, DiscreteRegNet)
    make_registration_bundle(network, *, modality="T1w", spacing_mm=(2, 2, 2),
                             in_plane_shape=(96, 112), normalisation=None, provenance=None)
    # (b) the supervised source loss
    source_supervised_loss(out, labels_cp, disp_cp=None, *, l2_weight=0.0,
                           weight_cp=None) -> Tensor               # scalar
    head_cross_entropy(logits, labels_cp, weight_cp=None) -> Tensor
    # (c) pairs with ground truth (source: moving_domain=None; target: "t2", "pd", ...)
    load_registration_slices(subjects, moving_domain=None, *, grid=None, data_seed=0,
                             volume_spacing_mm=2.0, template=None, progress=None) -> RegSlices
    pairs_from_slices(slices, index, rng, *, displacement_grid, stride, max_px=5.0,
                      smooth_px=8.0) -> RegPairs                   # fresh random fields
    make_registration_pairs(subjects, moving_domain=None, *, seed=0, grid=None,
                            displacement_grid=DisplacementGrid(6.0, 11), stride=4,
                            ...) -> RegPairs                       # fixed evaluation pairs
    # scores: accuracy (argmax label == true label), EPE (mm), warped Dice, folding
    evaluate_registration(network, pairs, *, spacing_mm=(2.0, 2.0), batch_size=16,
                          device="cpu") -> dict
    # training
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

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from uda_core.io.intensity import DEFAULT_NORMALISATION
from uda_core.models.bundle import ModelBundle, save_bundle
from uda_core.models.bundle.registration import load_registration_model, make_registration_bundle
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.spatial.fields import (
    displacement_at_control_points,
    make_pairs,
    registration_slices,
)
from uda_core.spatial.warp import (
    DisplacementGrid,
    jacobian_determinant,
    quantise,
    warp_image,
)

__all__ = [
    "EVAL_SUBJECTS", "TRAIN_SUBJECTS", "VAL_SUBJECTS", "RegPairs", "RegSlices",
    "RegTrainingConfig", "evaluate_registration", "head_cross_entropy",
    "load_registration_model", "load_registration_slices", "make_registration_bundle",
    "make_registration_pairs", "pairs_from_slices", "source_supervised_loss",
    "train_registration", "train_registration_source",
]

Progress = Callable[[str, int, int, dict], None]  # (phase, done, total, scores)
Cancel = Callable[[], bool]

# Demo subjects (generator seed 0): the same training subjects as demo:brain-t1; 12-13 choose
# the best step; 100-102 are the held-out benchmark subjects; 40-42 are left to adaptation.
TRAIN_SUBJECTS = (*range(0, 12), *range(20, 28))
VAL_SUBJECTS = (12, 13)
EVAL_SUBJECTS = (100, 101, 102)


# ----------------------------------------------------------------------------- data


@dataclass
class RegSlices:
    """Aligned axial slices of several subjects on one model grid (numpy).

    fixed: (N, H, W) float32 normalised fixed-modality (T1) slices.
    moving_source: (N, H, W) float32 slices the moving images are made from: ``fixed`` itself
        (mono-modal) or the subject's voxel-aligned other modality (e.g. T2).
    labels: (N, H, W) int64 tissue labels of the fixed slices (0 background, 1 CSF, 2 GM, 3 WM).
    subjects: (N,) int64 subject index of each slice.
    """

    fixed: np.ndarray
    moving_source: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray

    def __len__(self) -> int:
        return int(self.fixed.shape[0])


@dataclass
class RegPairs:
    """Registration pairs with their true displacement (torch tensors, N pairs).

    fixed, moving: (N, 1, H, W) float32. disp: (N, 2, H, W) float32 pixels (dy, dx), the true
    field with ``warp_image(moving, disp) ~ fixed``. disp_cp: (N, 2, Kh, Kw) pixels, ``disp``
    averaged over each control point's stride x stride block. labels_cp: (N, Kh, Kw) int64,
    ``quantise(disp_cp, displacement_grid)``. mask_cp: (N, Kh, Kw) bool, control points whose
    block is at least half brain (fixed tissue labels > 0). fixed_labels, moving_labels:
    (N, H, W) int64 tissue labels (the moving ones warped like the moving image). subjects:
    (N,) int64.
    """

    fixed: Tensor
    moving: Tensor
    disp: Tensor
    disp_cp: Tensor
    labels_cp: Tensor
    mask_cp: Tensor
    fixed_labels: Tensor
    moving_labels: Tensor
    subjects: Tensor

    def __len__(self) -> int:
        return int(self.fixed.shape[0])

    def subset(self, index) -> RegPairs:
        """The pairs at ``index`` (slice, int array or tensor), same fields."""
        return RegPairs(**{f.name: getattr(self, f.name)[index]
                           for f in dataclasses.fields(self)})

    def to(self, device) -> RegPairs:
        return RegPairs(**{f.name: getattr(self, f.name).to(device)
                           for f in dataclasses.fields(self)})


def _model_grid(grid) -> dict:
    """spacing_mm / in_plane_shape / normalisation from a bundle, config, mapping or None."""
    if grid is None:
        return {"spacing_mm": (2.0, 2.0, 2.0), "in_plane_shape": (96, 112),
                "normalisation": dict(DEFAULT_NORMALISATION)}
    get = grid.get if isinstance(grid, dict) else (lambda k: getattr(grid, k))
    return {k: get(k) for k in ("spacing_mm", "in_plane_shape", "normalisation")}


def load_registration_slices(subjects: Sequence[int], moving_domain: str | None = None, *,
                             grid=None, data_seed: int = 0, volume_spacing_mm: float = 2.0,
                             template=None, progress: Progress | None = None) -> RegSlices:
    """Demo subjects simulated in memory and cut into model-grid slices for registration.

    Each subject is made by :func:`uda_core.synth.domains.make_subject` (seed ``data_seed``,
    ``volume_spacing_mm`` voxels; seed 0 and 2 mm are what ``uda demo-data`` writes), then
    :func:`~uda_core.spatial.fields.registration_slices` puts its T1 (fixed) and, with
    ``moving_domain`` (e.g. "t2", "pd"), the voxel-aligned other modality on the model grid
    ``grid`` (a bundle, a config or a mapping with spacing_mm / in_plane_shape /
    normalisation; None: 2 mm, 96 x 112, default normalisation). Slices with < 2 % head are
    dropped.
    """
    from uda_core.synth.domains import make_subject  # the generator is heavy; import lazily

    model_grid = _model_grid(grid)
    domains = ("t1",) if moving_domain in (None, "t1") else ("t1", moving_domain)
    parts: dict[str, list] = {"fixed": [], "moving_source": [], "labels": [], "subjects": []}
    for done, subject in enumerate(subjects):
        volumes = make_subject(int(subject), domains, spacing_mm=volume_spacing_mm,
                               seed=data_seed, template=template)
        t1, labels = volumes["t1"]
        other = volumes[domains[-1]][0] if len(domains) > 1 else None
        fixed, moved, tissue = registration_slices(t1, other, model_grid, labels=labels)
        parts["fixed"].append(fixed)
        parts["moving_source"].append(fixed if moved is None else moved)
        parts["labels"].append(tissue)
        parts["subjects"].append(np.full(len(fixed), int(subject), dtype=np.int64))
        if progress is not None:
            progress("data", done + 1, len(subjects), {})
    return RegSlices(**{k: np.concatenate(v) for k, v in parts.items()})


def pairs_from_slices(slices: RegSlices, index, rng: np.random.Generator, *,
                      displacement_grid: DisplacementGrid, stride: int, max_px: float = 5.0,
                      smooth_px: float = 8.0) -> RegPairs:
    """Pairs of the slices at ``index`` with fresh random fields (see ``make_pairs``).

    ``max_px`` (longest vector, pixels) and ``smooth_px`` (Gaussian sigma, pixels) shape the
    random fields; ``rng`` is the only source of randomness.
    """
    index = np.atleast_1d(np.asarray(index))
    mono = slices.moving_source is slices.fixed
    pairs = make_pairs(slices.fixed[index], slices.labels[index], rng,
                       None if mono else slices.moving_source[index],
                       max_px=max_px, smooth_px=smooth_px)
    disp_cp = displacement_at_control_points(pairs["disp"], stride)
    brain = (pairs["fixed_labels"] > 0).to(torch.float32)[:, None]
    mask_cp = F.avg_pool2d(brain, stride, stride)[:, 0] >= 0.5
    return RegPairs(fixed=pairs["fixed"], moving=pairs["moving"], disp=pairs["disp"],
                    disp_cp=disp_cp, labels_cp=quantise(disp_cp, displacement_grid),
                    mask_cp=mask_cp, fixed_labels=pairs["fixed_labels"],
                    moving_labels=pairs["moving_labels"],
                    subjects=torch.from_numpy(slices.subjects[index].copy()))


def make_registration_pairs(subjects: Sequence[int], moving_domain: str | None = None, *,
                            seed: int = 0, grid=None,
                            displacement_grid: DisplacementGrid | None = None,
                            stride: int = 4, max_px: float = 5.0, smooth_px: float = 8.0,
                            data_seed: int = 0, template=None,
                            progress: Progress | None = None) -> RegPairs:
    """One pair per head slice of ``subjects``, reproducible from ``seed`` (for scoring).

    Mono-modal (T1-T1) without ``moving_domain``; T1 fixed / ``moving_domain`` moving
    otherwise. ``displacement_grid`` (default ``DisplacementGrid(6.0, 11)``) and ``stride``
    must be the network's (``net.grid``, ``net.stride``).
    """
    slices = load_registration_slices(subjects, moving_domain, grid=grid, data_seed=data_seed,
                                      template=template, progress=progress)
    return pairs_from_slices(slices, np.arange(len(slices)), np.random.default_rng(seed),
                             displacement_grid=displacement_grid or DisplacementGrid(6.0, 11),
                             stride=stride, max_px=max_px, smooth_px=smooth_px)


# ----------------------------------------------------------------------------- loss


def head_cross_entropy(logits: Tensor, labels_cp: Tensor,
                       weight_cp: Tensor | None = None) -> Tensor:
    """Cross-entropy of one head's logits (B, L, Kh, Kw) on labels (B, Kh, Kw) int64.

    Mean over control points, weighted by ``weight_cp`` (B, Kh, Kw) when given. Scalar.
    """
    per_point = F.cross_entropy(logits, labels_cp, reduction="none")
    if weight_cp is None:
        return per_point.mean()
    weight_cp = weight_cp.to(per_point.dtype)
    return (per_point * weight_cp).sum() / weight_cp.sum().clamp_min(1e-8)


def source_supervised_loss(out: dict[str, Tensor], labels_cp: Tensor,
                           disp_cp: Tensor | None = None, *, l2_weight: float = 0.0,
                           weight_cp: Tensor | None = None) -> Tensor:
    """The supervised source loss of both heads (MCD step A; step B's source term).

    ``CE(logits1) + CE(logits2)`` on the quantised labels (B, Kh, Kw), plus, when ``disp_cp``
    (B, 2, Kh, Kw, true displacement in pixels) is given and ``l2_weight`` > 0,
    ``l2_weight * mean |out["disp_cp"] - disp_cp|^2`` (squared pixels; the expected
    displacement under the mean of the heads' softmaxes). ``out`` is ``DiscreteRegNet``'s
    output dict; ``weight_cp`` (B, Kh, Kw) weighs the control points. Scalar tensor.
    """
    loss = (head_cross_entropy(out["logits1"], labels_cp, weight_cp)
            + head_cross_entropy(out["logits2"], labels_cp, weight_cp))
    if disp_cp is not None and l2_weight > 0:
        squared = (out["disp_cp"] - disp_cp).pow(2).sum(dim=1)  # (B, Kh, Kw) px^2
        if weight_cp is None:
            l2 = squared.mean()
        else:
            weight_cp = weight_cp.to(squared.dtype)
            l2 = (squared * weight_cp).sum() / weight_cp.sum().clamp_min(1e-8)
        loss = loss + l2_weight * l2
    return loss


# ----------------------------------------------------------------------------- scores


def _score_sums(out: dict[str, Tensor], pairs: RegPairs, scale: Tensor,
                n_classes: int) -> dict[str, np.ndarray]:
    mask = pairs.mask_cp
    pred = out["probs"].argmax(1)
    error = ((out["disp_cp"] - pairs.disp_cp) * scale).norm(dim=1)  # (B, Kh, Kw) mm
    still = (pairs.disp_cp * scale).norm(dim=1)  # error of no registration
    warped = warp_image(pairs.moving_labels[:, None], out["disp"], mode="nearest")[:, 0]
    det = jacobian_determinant(out["disp"])
    brain = pairs.fixed_labels[:, :-1, :-1] > 0
    sums = {
        "points": mask.sum(), "points_all": mask.numel(),
        "correct": ((pred == pairs.labels_cp) & mask).sum(),
        "correct_all": (pred == pairs.labels_cp).sum(),
        "correct_identity": ((pairs.labels_cp == pairs.labels_cp.new_tensor(
            out["probs"].shape[1] // 2)) & mask).sum(),
        "epe": (error * mask).sum(), "epe_identity": (still * mask).sum(),
        "folded": ((det <= 0) & brain).sum(), "brain": brain.sum(),
    }
    result = {k: np.asarray(float(v)) for k, v in sums.items()}
    for name, labels in (("after", warped), ("before", pairs.moving_labels)):
        inter = [((labels == c) & (pairs.fixed_labels == c)).sum() for c in range(1, n_classes)]
        size = [(labels == c).sum() + (pairs.fixed_labels == c).sum()
                for c in range(1, n_classes)]
        result[f"inter_{name}"] = np.array([float(v) for v in inter])
        result[f"size_{name}"] = np.array([float(v) for v in size])
    return result


@torch.no_grad()
def evaluate_registration(network: DiscreteRegNet, pairs: RegPairs, *,
                          spacing_mm=(2.0, 2.0), batch_size: int = 16, device="cpu",
                          n_classes: int = 4) -> dict[str, float]:
    """Scores of ``network`` on ``pairs`` (network put in eval mode).

    Returns a dict of floats:
    ``accuracy``: share of brain control points (``mask_cp``) whose argmax label (of the mean
    of the heads' softmaxes) equals the true quantised label (the paper's "registration
    accuracy"); ``accuracy_all``: the same over every control point; ``accuracy_identity``:
    share whose true label is zero displacement (what predicting "no motion" scores);
    ``epe_mm``: mean endpoint error at brain control points between the expected displacement
    and the true (unquantised) block-mean displacement, in mm (``spacing_mm`` = (row, column)
    pixel size); ``epe_identity_mm``: the same for zero displacement (the initial error);
    ``dice_before`` / ``dice_after``: mean Dice over tissue classes 1..n_classes-1 of the
    moving labels (before / after warping with the dense field, nearest neighbour) against the
    fixed labels, pooled over all pairs; ``folding``: share of brain pixels whose Jacobian
    determinant is <= 0; ``pairs``: N.
    """
    network.eval()
    scale = torch.tensor([float(spacing_mm[0]), float(spacing_mm[1])],
                         device=device).view(1, 2, 1, 1)
    total: dict[str, np.ndarray] = {}
    for start in range(0, len(pairs), batch_size):
        batch = pairs.subset(slice(start, start + batch_size)).to(device)
        out = network(batch.fixed, batch.moving)
        for key, value in _score_sums(out, batch, scale, n_classes).items():
            total[key] = total.get(key, 0.0) + value
    if not total:
        raise ValueError("no pairs to evaluate")

    def dice(name: str) -> float:
        return float(np.mean(2 * total[f"inter_{name}"] / np.maximum(total[f"size_{name}"], 1)))

    points = max(float(total["points"]), 1.0)
    return {
        "accuracy": float(total["correct"]) / points,
        "accuracy_all": float(total["correct_all"]) / max(float(total["points_all"]), 1.0),
        "accuracy_identity": float(total["correct_identity"]) / points,
        "epe_mm": float(total["epe"]) / points,
        "epe_identity_mm": float(total["epe_identity"]) / points,
        "dice_before": dice("before"),
        "dice_after": dice("after"),
        "folding": float(total["folded"]) / max(float(total["brain"]), 1.0),
        "pairs": float(len(pairs)),
    }


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
    width: int = 16
    smooth_sigma_px: float = 4.0
    modality: str = "T1w"
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    in_plane_shape: tuple[int, int] = (96, 112)
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))

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
    best = {"accuracy": -1.0, "step": 0, "state": None, "scores": {}}
    losses: list[float] = []
    status, step, start = "completed", 0, time.perf_counter()

    def validate(at: int) -> None:
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
        weight = batch.mask_cp.float() * (1 - config.background_weight) \
            + config.background_weight
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


