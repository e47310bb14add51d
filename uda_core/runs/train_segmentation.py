"""Supervised training on labelled source data: the work behind `uda train-source`.

Produces a complete model bundle: the 2D U-Net, the class-ratio prior measured on the training
labels (per class and per normalised axial slice position) and the early-feature head, trained
afterwards with the network frozen (METHODS.md sections 1 and 4). Training batches can be
augmented on the fly (`SourceTrainingConfig.augment`, :mod:`uda_core.synth.augment`);
validation batches never are.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from uda_core import __version__
from uda_core.grid.labelled_slices import SliceSet, load_slices
from uda_core.grid.model_grid import DEFAULT_GRID
from uda_core.io.files import fingerprint
from uda_core.io.intensity import DEFAULT_NORMALISATION
from uda_core.models.bundle import ModelBundle
from uda_core.models.nets.unet import UNet2D
from uda_core.models.standardise import intensity_reference
from uda_core.synth.augment import PRESETS, AugmentConfig, Augmenter

Progress = Callable[[str, int, int, dict], None]  # (phase, done, total, scores)


@dataclass
class SourceTrainingConfig:
    """Settings of supervised source training (defaults made the demo model)."""

    class_names: tuple[str, ...] = ("background", "CSF", "GM", "WM")
    modality: str = "T1w"
    spacing_mm: tuple[float, float, float] = DEFAULT_GRID.spacing_mm
    in_plane_shape: tuple[int, int] = DEFAULT_GRID.in_plane_shape
    base_channels: int = 16
    depth: int = 3
    epochs: int = 30            # passes over the training slices
    batch_size: int = 16
    lr: float = 1e-3            # Adam, cosine decay to 0
    # cross-entropy weight of each class (None: all 1); the soft Dice term is unweighted
    class_weights: tuple[float, ...] | None = None
    # extra cross-entropy weight of pixels within boundary_px pixels of the brain's edge
    # (labelled tissue next to background, either side): 0 = none
    boundary_weight: float = 0.0
    boundary_px: int = 2
    weight_decay: float = 1e-4
    empty_slice_share: float = 0.1   # share of slices without labelled tissue kept for training
    head_epochs: int = 8        # early-head training with the network frozen
    prior_bins: int = 20        # slice-position bins of the class-ratio prior
    seed: int = 0
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    # recorded in the bundle: True = trained on brain-extracted scans, False = on whole
    # heads (non-brain labelled background), None = not said
    skull_stripped_input: bool | None = None
    # training-batch augmentation, a preset of uda_core.synth.augment: "none" (left-right
    # flips only, drawn as they always were: today's results bit for bit), "geometric"
    # (+ rotations, scalings), "contrast" (+ gamma, intensity curves, bias, blur, noise)
    augment: str = "none"
    # settings to use instead of the preset's (then applied by the augmenter even with
    # "none"); None: the preset as it is. pixel_mm always follows spacing_mm
    augment_config: AugmentConfig | None = None


def augment_settings(config: SourceTrainingConfig) -> AugmentConfig:
    """The augmentation source training applies: ``config.augment_config`` or the preset
    ``config.augment``, with the model grid's in-plane pixel size.

    Raises:
        ValueError: an unknown preset.
    """
    if config.augment not in PRESETS:
        raise ValueError(f"unknown augmentation {config.augment!r}; expected one of {PRESETS}")
    base = config.augment_config or AugmentConfig.preset(config.augment)
    return replace(base, pixel_mm=(float(config.spacing_mm[0]), float(config.spacing_mm[1])))


def class_ratio_prior(slices: SliceSet, num_classes: int, bins: int,
                      skull_stripped_input: bool | None = None) -> dict:
    """Expected fraction of each class in a slice, overall and per slice-position bin, over
    the training volumes of the kind a target is taken to be (SliceSet.volumes_of_kind: whole
    heads unless the model expects skull-stripped input). A position is a different place in
    a head (0 = its lowest slice showing the head, in the neck) than in a brain alone (its
    lowest brain slice), so one table over both kinds fits neither (BENCHMARKS.md, "The
    class-ratio prior of heads and brains").

    Fractions are over all pixels of the model-grid slice. "constant" averages the slices that
    contain labelled tissue; "per_position" averages slices whose position falls in each of
    `bins` equal bins of 0..1 (empty bins fall back to the constant).
    """
    kind = slices.volumes_of_kind(skull_stripped_input)
    keep = (slice(None) if kind is None or slices.volume_index is None
            else kind[slices.volume_index])
    labels, positions = slices.labels[keep], slices.positions[keep]
    counts = np.stack([(labels == c).mean(axis=(1, 2)) for c in range(num_classes)], 1)
    has_tissue = counts[:, 1:].sum(axis=1) > 0
    constant = counts[has_tissue].mean(axis=0) if has_tissue.any() else counts.mean(axis=0)
    centres = (np.arange(bins) + 0.5) / bins
    which = np.minimum((positions * bins).astype(int), bins - 1)
    per_position = [counts[which == b].mean(axis=0) if np.any(which == b) else constant
                    for b in range(bins)]
    return {"constant": [float(v) for v in constant],
            "positions": [float(v) for v in centres],
            "per_position": [[float(v) for v in row] for row in per_position]}


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes of a batch."""
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (denom + 1.0))[1:].mean()


def brain_edge(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within `radius` pixels (square neighbourhood) of the edge between labelled
    tissue (label > 0) and background, on either side. labels: (N, H, W) integers;
    returns a bool tensor of the same shape."""
    brain = (labels > 0).unsqueeze(1).float()
    size = 2 * radius + 1
    grown = F.max_pool2d(brain, size, stride=1, padding=radius)
    shrunk = -F.max_pool2d(-brain, size, stride=1, padding=radius)
    return (grown != shrunk).squeeze(1)


def _weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                            class_weights: torch.Tensor | None, boundary_weight: float,
                            boundary_px: int) -> torch.Tensor:
    """Cross-entropy with per-class weights and extra weight near the brain's edge; the
    weighted mean (as torch's `weight=`), so with no weights it is plain cross-entropy."""
    if boundary_weight == 0:
        return F.cross_entropy(logits, target, weight=class_weights)
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    weight = 1.0 + boundary_weight * brain_edge(target, boundary_px).to(logits.dtype)
    if class_weights is not None:
        weight = weight * class_weights[target]
    return (per_pixel * weight).sum() / weight.sum()


def _training_indices(slices: SliceSet, share_empty: float, rng: np.random.Generator):
    has_tissue = (slices.labels > 0).reshape(len(slices.labels), -1).any(axis=1)
    full, empty = np.flatnonzero(has_tissue), np.flatnonzero(~has_tissue)
    keep = rng.choice(empty, size=min(len(empty), int(share_empty * len(full))), replace=False)
    return np.concatenate([full, keep])


def _batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(indices)
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _to_batch(slices: SliceSet, idx: np.ndarray, device, flip: np.ndarray | None = None):
    images = torch.from_numpy(slices.images[idx]).unsqueeze(1)
    labels = torch.from_numpy(slices.labels[idx])
    if flip is not None and flip.any():  # left-right flip (axis X) of chosen samples
        f = torch.from_numpy(flip)
        images[f] = images[f].flip(-2)
        labels[f] = labels[f].flip(-2)
    return images.to(device), labels.to(device)


@torch.no_grad()
def mean_dice_on_slices(network, slices: SliceSet, device, num_classes: int,
                        early: bool = False, batch_size: int = 32) -> float:
    """Mean foreground Dice over a slice set (the final output, or the early head's)."""
    network.eval()
    inter = np.zeros(num_classes)
    total = np.zeros(num_classes)
    for start in range(0, len(slices.images), batch_size):
        idx = np.arange(start, min(start + batch_size, len(slices.images)))
        images, labels = _to_batch(slices, idx, device)
        logits = network.forward_with_early(images)[1] if early else network(images)
        pred = logits.argmax(1)
        for c in range(1, num_classes):
            inter[c] += ((pred == c) & (labels == c)).sum().item()
            total[c] += (pred == c).sum().item() + (labels == c).sum().item()
    return float(np.mean(2 * inter[1:] / np.maximum(total[1:], 1)))


def _fit(network, params, slices, val, config, device, epochs, loss_fn, phase, progress,
         score_fn, seed_offset, on_epoch: Callable[[int], None] | None = None):
    rng = np.random.default_rng(config.seed + seed_offset)
    # the augmenter has its own generator, so the batch order is the same in every preset
    augmenter = (None if config.augment == "none" and config.augment_config is None
                 else Augmenter(augment_settings(config), seed=config.seed + seed_offset))
    indices = _training_indices(slices, config.empty_slice_share, rng)
    steps_per_epoch = -(-len(indices) // config.batch_size)
    optimiser = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs * steps_per_epoch)
    best_score, best_state = -1.0, None
    for epoch in range(epochs):
        network.train() if phase == "network" else network.eval()
        losses = []
        for idx in _batches(indices, config.batch_size, rng):
            flip = rng.random(len(idx)) < 0.5   # drawn in every preset (same batch order)
            if augmenter is None:
                images, labels = _to_batch(slices, idx, device, flip)
            else:
                images, labels = augmenter(*_to_batch(slices, idx, device))
            loss = loss_fn(network, images, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        score = score_fn(network, val)
        if score > best_score:
            best_score = score
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        if progress:
            progress(phase, epoch + 1, epochs,
                     {"loss": float(np.mean(losses)), "val_dice": score, "best": best_score})
        if on_epoch is not None:
            on_epoch(epoch + 1)
    network.load_state_dict(best_state)
    return best_score


def train_source_model(train_pairs, val_pairs, config: SourceTrainingConfig | None = None,
                       device: torch.device | str = "cpu",
                       progress: Progress | None = None,
                       init_state: dict | None = None,
                       snapshot: Callable[[int, ModelBundle], None] | None = None,
                       ) -> tuple[ModelBundle, dict]:
    """Train the segmentation network, its early head and the prior on labelled volumes.

    train_pairs / val_pairs: sequences of (image path, label path). Validation pairs choose the
    best epoch. init_state: a state dict of the same architecture (early head included, e.g.
    `bundle.build_network().state_dict()`) to start from instead of random weights, for
    fine-tuning. `config.head_epochs = 0` keeps the early head as it starts (the summary's
    head Dice is then NaN). `config.augment` augments every training batch of both phases
    (network and early head) on the fly, never the validation slices; the bundle's provenance
    records the preset and its settings ("augmentation"). Returns the bundle and a summary
    with the validation Dice of both outputs. snapshot(epoch, bundle), if given, receives a
    bundle of the network after every network epoch (1-based; its early head is the one the
    training started from, not yet retrained), e.g. to keep candidates for a later choice.
    """
    config = config or SourceTrainingConfig()
    augmentation = augment_settings(config)   # an unknown preset fails before any work
    device = torch.device(device)
    torch.manual_seed(config.seed)
    num_classes = len(config.class_names)
    grid = (config.spacing_mm, config.in_plane_shape, config.normalisation)
    train, val = (load_slices(train_pairs, *grid, num_classes),
                  load_slices(val_pairs, *grid, num_classes))
    arch_kwargs: dict[str, Any] = {"in_channels": 1, "num_classes": num_classes,
                                   "base_channels": config.base_channels,
                                   "depth": config.depth, "early_head": True}
    network = UNet2D(**arch_kwargs).to(device)
    if init_state is not None:
        network.load_state_dict(init_state, strict=True)

    early_head = network.early_head
    assert early_head is not None  # built with early_head=True
    head_params = {id(p) for p in early_head.parameters()}
    body = [p for p in network.parameters() if id(p) not in head_params]

    weights = None
    if config.class_weights is not None:
        if len(config.class_weights) != num_classes or min(config.class_weights) <= 0:
            raise ValueError(f"class_weights needs {num_classes} positive numbers, one per "
                             f"class; got {config.class_weights}")
        weights = torch.tensor(config.class_weights, dtype=torch.float32, device=device)

    def segmentation_loss(net, images, labels):
        logits = net(images)
        return (_weighted_cross_entropy(logits, labels, weights, config.boundary_weight,
                                        config.boundary_px)
                + _soft_dice_loss(logits, labels))

    def val_score(net, data):
        return mean_dice_on_slices(net, data, device, num_classes)

    def make_bundle(summary: dict) -> ModelBundle:
        return _bundle(network, arch_kwargs, config, augmentation, train, train_pairs,
                       val_pairs, summary)

    def on_epoch(epoch: int) -> None:
        if snapshot is not None:
            snapshot(epoch, make_bundle({"snapshot_epoch": epoch}))

    val_dice = _fit(network, body, train, val, config, device, config.epochs,
                    segmentation_loss, "network", progress, val_score, 0, on_epoch)

    for p in body:
        p.requires_grad_(False)

    def head_loss(net, images, labels):
        return F.cross_entropy(net.forward_with_early(images)[1], labels)

    def head_score(net, data):
        return mean_dice_on_slices(net, data, device, num_classes, early=True)

    head_dice = float("nan")
    if config.head_epochs > 0:
        head_dice = _fit(network, list(early_head.parameters()), train, val, config,
                         device, config.head_epochs, head_loss, "early head", progress,
                         head_score, 1)
    for p in body:
        p.requires_grad_(True)

    summary = {"val_dice": val_dice, "val_dice_early_head": head_dice,
               "train_slices": int(len(train.images)), "val_slices": int(len(val.images))}
    return make_bundle(summary), summary


def _intensity_reference(train: SliceSet, skull_stripped_input: bool | None) -> dict | None:
    """The bundle's source intensity reference: the mean brain percentiles of the training
    volumes of the kind a target is standardised as, whole heads unless the model expects
    skull-stripped input. A brain alone is normalised over itself, a head over the whole
    head, so their brain percentiles differ, and a mean over both matches neither (the one
    demo:brain-t1 V3/V4 shipped with: 0.5th percentile -1.74 against the heads' -1.17; it
    lowered validation t1 heads 0.848 -> 0.841, the heads' own gives 0.863, BENCHMARKS.md)."""
    quantiles = train.volume_quantiles
    if quantiles is None:
        return None
    kind = train.volumes_of_kind(skull_stripped_input)
    return intensity_reference(quantiles if kind is None else quantiles[kind])


def _bundle(network, arch_kwargs: dict, config: SourceTrainingConfig,
            augmentation: AugmentConfig, train: SliceSet, train_pairs, val_pairs,
            summary: dict) -> ModelBundle:
    """The model bundle of the network as it is now, with its provenance."""
    num_classes = len(config.class_names)
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    head_state = {k[len("early_head."):]: v for k, v in state.items()
                  if k.startswith("early_head.")}
    body_state = {k: v for k, v in state.items() if not k.startswith("early_head.")}
    provenance = {
        "parent": None,
        "method": "supervised-source",
        "config": asdict(config),  # save_bundle stores it as builtins
        "augmentation": {"preset": config.augment, "settings": asdict(augmentation)},
        "data_fingerprints": {str(p): fingerprint(p) for pair in train_pairs for p in pair},
        "validation_fingerprints": {str(p): fingerprint(p) for pair in val_pairs for p in pair},
        "summary": summary,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "command": " ".join(sys.argv),
    }
    bundle = ModelBundle(
        architecture="unet2d", arch_kwargs=arch_kwargs, state_dict=body_state,
        class_names=list(config.class_names), modality=config.modality,
        spacing_mm=[float(s) for s in config.spacing_mm],
        in_plane_shape=[int(s) for s in config.in_plane_shape], orientation="RAS",
        slice_axis=2, normalisation=dict(config.normalisation),
        class_ratio_prior=class_ratio_prior(train, num_classes, config.prior_bins,
                                            config.skull_stripped_input),
        early_head_state_dict=head_state, provenance=provenance,
        skull_stripped_input=config.skull_stripped_input,
        intensity_reference=_intensity_reference(train, config.skull_stripped_input))
    return bundle

