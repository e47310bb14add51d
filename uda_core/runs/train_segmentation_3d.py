"""Supervised training of a small 3D network (MONAI's UNet) on labelled volumes: the work
behind `uda train-source --dims 3`.

Each volume is put on its 3D model grid (:func:`uda_core.grid.prepare.prepare_volume_3d`: RAS,
``spacing_mm``, the whole volume) and training draws random ``roi`` ^3 patches centred on
labelled tissue (with left-right flips), Adam on cross-entropy + soft Dice for ``steps``
updates with cosine decay. Validation: mean foreground Dice of the sliding-window prediction
of each validation volume every ``val_every`` steps; the best weights are kept. The bundle is
a 3D bundle (``dims`` 3, ``window`` roi / overlap 0.5 / gaussian) of architecture
"monai.UNet" with BatchNorm, so tent and adabn apply, and records a per-patch class-ratio
prior (:func:`patch_class_prior`), so sfda applies to 3D patches too.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from uda_core import __version__
from uda_core.grid.patches import head_voxels, pad_to, patch_box
from uda_core.grid.prepare import labels_to_grid, prepare_volume_3d
from uda_core.io.files import fingerprint
from uda_core.io.intensity import DEFAULT_NORMALISATION
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import ModelBundle
from uda_core.models.nets import architecture_class
from uda_core.models.sliding_window import predict_volume

Progress = Callable[[str, int, int, dict], None]  # (phase, done, total, scores)


@dataclass
class Source3DConfig:
    """Settings of 3D source training (small defaults: a CPU trains it in minutes)."""

    class_names: tuple[str, ...] = ("background", "CSF", "GM", "WM")
    modality: str = "T1w"
    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    roi: int = 48                   # training patch and inference window, voxels per axis
    channels: tuple[int, ...] = (8, 16, 32)   # MONAI UNet channels per level (stride 2 each)
    steps: int = 300
    batch_size: int = 2
    lr: float = 3e-3                # Adam, cosine decay to 0
    val_every: int = 50
    seed: int = 0
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    skull_stripped_input: bool | None = None


def _on_grid(pairs, config: Source3DConfig) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image (X, Y, Z), labels (X, Y, Z), axial positions (Z,)) of each pair on its grid."""
    volumes = []
    for image_path, label_path in pairs:
        model_input = prepare_volume_3d(read_volume(image_path), list(config.spacing_mm),
                                        config.normalisation)
        labels = labels_to_grid(read_labels(label_path), model_input)
        volumes.append((np.moveaxis(model_input.slices, 0, -1),
                        np.moveaxis(labels, 0, -1), model_input.positions))
    return volumes


def patch_class_prior(volumes, roi: int, num_classes: int, bins: int = 10,
                      per_volume: int = 300, seed: int = 0) -> dict:
    """The class-ratio prior of 3D patches, in the bundle's prior format.

    Patches are drawn as 3D adaptation draws them (``roi`` ^3 boxes centred on random head
    voxels, :mod:`uda_core.grid.patches`); each patch's label fractions are binned by the
    normalised axial position of its centre (``bins`` equal bins of 0..1, the key that 3D
    adaptation batches carry as ``positions``); "constant" is the mean over all patches.
    Empty bins fall back to the constant.
    """
    rng = np.random.default_rng(seed)
    ratios, where = [], []
    box_roi = [roi] * 3
    for image, labels, positions in volumes:
        image = pad_to(image, box_roi, float(image.min()))
        labels = pad_to(labels, box_roi, 0)
        head = head_voxels(image)
        for centre in head[rng.integers(0, len(head), per_volume)]:
            patch = labels[patch_box(centre, box_roi, labels.shape)]
            ratios.append(np.bincount(patch.ravel(), minlength=num_classes) / patch.size)
            where.append(positions[min(int(centre[2]), len(positions) - 1)])
    ratios_array, where_array = np.asarray(ratios), np.asarray(where)
    constant = ratios_array.mean(axis=0)
    which = np.minimum((where_array * bins).astype(int), bins - 1)
    per_position = [ratios_array[which == b].mean(axis=0) if np.any(which == b) else constant
                    for b in range(bins)]
    return {"constant": [float(v) for v in constant],
            "positions": [float(v) for v in (np.arange(bins) + 0.5) / bins],
            "per_position": [[float(v) for v in row] for row in per_position]}


def _patch(image: np.ndarray, labels: np.ndarray, positions: np.ndarray, roi: int,
           rng: np.random.Generator):
    image = pad_to(image, [roi] * 3, float(image.min()))
    labels = pad_to(labels, [roi] * 3, 0)
    tissue = np.argwhere(labels > 0)
    centre = tissue[rng.integers(len(tissue))] if len(tissue) else np.array(image.shape) // 2
    box = patch_box(centre, [roi] * 3, image.shape)
    x, y = image[box], labels[box]
    if rng.random() < 0.5:  # left-right flip (grid axis 0 is x)
        x, y = x[::-1], y[::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def _dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    return 1 - ((2 * inter + 1) / (probs.sum(dims) + onehot.sum(dims) + 1))[:, 1:].mean()


def _val_dice(network, volumes, window, device, num_classes) -> float:
    scores = []
    for image, labels, _ in volumes:
        pred = predict_volume(network, image[None], window, device, 2).argmax(0)
        for c in range(1, num_classes):
            a, b = pred == c, labels == c
            total = a.sum() + b.sum()
            scores.append(1.0 if total == 0 else 2 * (a & b).sum() / total)
    return float(np.mean(scores))


def train_source_3d(train_pairs, val_pairs, config: Source3DConfig | None = None,
                    device: torch.device | str = "cpu",
                    progress: Progress | None = None) -> tuple[ModelBundle, dict]:
    """Train a 3D MONAI UNet on labelled volumes; returns the 3D bundle and a summary with
    the best validation Dice (mean over foreground classes)."""
    config = config or Source3DConfig()
    device = torch.device(device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    num_classes = len(config.class_names)
    train, val = _on_grid(train_pairs, config), _on_grid(val_pairs, config)
    arch_kwargs = {"spatial_dims": 3, "in_channels": 1, "out_channels": num_classes,
                   "channels": list(config.channels),
                   "strides": [2] * (len(config.channels) - 1), "num_res_units": 1,
                   "norm": "batch"}
    network = architecture_class("monai.UNet")(**arch_kwargs).to(device)
    window = {"roi_size": [config.roi] * 3, "overlap": 0.5, "mode": "gaussian",
              "mirror_axes": [], "axes": [0, 1, 2]}
    optimiser = torch.optim.Adam(network.parameters(), lr=config.lr, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(config.steps, 1))
    best, best_state = -1.0, None
    for step in range(1, config.steps + 1):
        network.train()
        picks = rng.integers(0, len(train), config.batch_size)
        patches = [_patch(*train[int(i)], config.roi, rng) for i in picks]
        x = torch.from_numpy(np.stack([p[0] for p in patches]))[:, None].to(device)
        y = torch.from_numpy(np.stack([p[1] for p in patches])).to(device)
        logits = network(x)
        loss = F.cross_entropy(logits, y) + _dice_loss(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % config.val_every == 0 or step == config.steps:
            dice = _val_dice(network.eval(), val, window, device, num_classes)
            if dice > best:
                best = dice
                best_state = {k: v.detach().cpu().clone()
                              for k, v in network.state_dict().items()}
            if progress is not None:
                progress("network", step, config.steps, {"loss": float(loss), "val_dice": dice})
    assert best_state is not None
    summary = {"val_dice": best, "train_volumes": len(train), "val_volumes": len(val)}
    provenance = {
        "parent": None, "method": "supervised-source-3d", "config": asdict(config),
        "data_fingerprints": {str(p): fingerprint(p) for pair in train_pairs for p in pair},
        "validation_fingerprints": {str(p): fingerprint(p) for pair in val_pairs for p in pair},
        "summary": summary,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__, "command": " ".join(sys.argv)}
    bundle = ModelBundle(
        architecture="monai.UNet", arch_kwargs=arch_kwargs, state_dict=best_state,
        class_names=list(config.class_names), modality=config.modality,
        spacing_mm=[float(s) for s in config.spacing_mm],
        in_plane_shape=[config.roi, config.roi], orientation="RAS", slice_axis=2,
        normalisation=dict(config.normalisation),
        class_ratio_prior=patch_class_prior(train, config.roi, num_classes, seed=config.seed),
        provenance=provenance, skull_stripped_input=config.skull_stripped_input, dims=3,
        window=window)
    return bundle, summary
