"""Does intensity standardisation help this network on these scans? A label-free check.

Standardisation (uda_core.models.standardise: N4 bias-field correction, then quantile
matching of each target's brain histogram onto the source's) helps when the scanner mostly
moved or unevenly scaled the tissue intensities, and can harm when it changed their contrast
in a way a histogram cannot undo: quantile matching alone lowered protocol by 0.009 on
validation subjects 40-45 with demo:brain-t1, while with N4 first every T1w shift gained
(t1 +0.025, protocol +0.037, mprage +0.021, highfield +0.078; BENCHMARKS.md).
So "first, do no harm" applies to it as to a training step: the source network is scored on
the targets as they are and standardised, with two label-free scores that its loss does not
touch, and the targets are standardised only when both say it is better:

- ``consistency``: agreement (mean foreground Dice) of the prediction with its predictions
  of the left-right flipped and of the brightened (x 1.1 + 0.1) slices, as the engine's
  score (uda_core.tasks.segmentation);
- ``entropy``: mean pixel entropy over log(C) (lower is better).

On those validation subjects the two agreed with the Dice change on every shift's mean
(t1, protocol, mprage, highfield; with and without N4); on single volumes they are weak
(correlation ~0.4), so the decision is one for the whole run, from the mean over its targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uda_core.io.readers import read_volume
from uda_core.methods.pseudo_labels import left_right_dim
from uda_core.models.inference import predict_slices, prepare_for_bundle, prepare_plain
from uda_core.models.standardise import standardised
from uda_core.scores import label_free

#: At most this many targets (evenly spread over the list) and slices per target are scored.
MAX_VOLUMES = 6
SLICES_PER_VOLUME = 24


@dataclass
class StandardisationCheck:
    """The verdict: ``use`` (standardise the run's targets), in one line for the command line
    (``line``) and why (``reason``, for the app); the mean scores of the plain (``plain``)
    and standardised (``standardised``) targets."""

    use: bool
    line: str
    reason: str = ""
    plain: dict[str, float] = field(default_factory=dict)
    standardised: dict[str, float] = field(default_factory=dict)
    volumes: int = 0

    def as_dict(self) -> dict:
        return {"used": self.use, "line": self.line, "reason": self.reason, "plain": self.plain,
                "standardised": self.standardised, "volumes": self.volumes}


def slice_scores(network: torch.nn.Module, slices: np.ndarray, num_classes: int,
                 device: torch.device) -> dict[str, float]:
    """``consistency`` and ``entropy`` of `network` on `slices` (Z, X, Y) normalised model
    input (the engine's definitions, uda_core.tasks.segmentation)."""
    flip = left_right_dim(None) - 1            # the slices' X axis (a batch's dim 2)
    probs = predict_slices(network, slices, device)                       # (C, Z, X, Y)
    flipped = np.flip(predict_slices(network, np.ascontiguousarray(np.flip(slices, flip)),
                                     device), flip + 1)
    brighter = predict_slices(network, slices * np.float32(1.1) + np.float32(0.1), device)
    labels = torch.from_numpy(probs.argmax(0))
    agree = 0.5 * (label_free.label_agreement(labels, torch.from_numpy(flipped.argmax(0)),
                                              num_classes)
                   + label_free.label_agreement(labels, torch.from_numpy(brighter.argmax(0)),
                                                num_classes))
    return {"consistency": agree,
            "entropy": label_free.mean_entropy(torch.from_numpy(probs).movedim(0, 1))}


def _scored_slices(slices: np.ndarray) -> np.ndarray:
    """Up to SLICES_PER_VOLUME evenly spaced slices that are not constant."""
    shown = np.flatnonzero(slices.reshape(len(slices), -1).std(axis=1) > 0)
    if len(shown) == 0:
        shown = np.arange(len(slices))
    pick = np.unique(np.linspace(0, len(shown) - 1, min(SLICES_PER_VOLUME, len(shown)))
                     .round().astype(int))
    return slices[shown[pick]]


def check_standardisation(bundle, network: torch.nn.Module, targets: Sequence[str | Path],
                          device: torch.device,
                          check: Callable[[str], None] | None = None) -> StandardisationCheck:
    """Score the source `network` (of the unstandardised 2D `bundle`, which must record an
    intensity reference) on up to MAX_VOLUMES of `targets` as they are and standardised;
    ``use`` when the mean consistency is higher and the mean entropy lower on the
    standardised ones. ``check(what)``: a cancellation point, visited before each file."""
    reference_bundle = standardised(bundle)
    chosen = np.unique(np.linspace(0, len(targets) - 1, min(MAX_VOLUMES, len(targets)))
                       .round().astype(int))
    num_classes = len(bundle.class_names)
    plain_rows, std_rows = [], []
    for index in chosen:
        path = targets[int(index)]
        if check is not None:
            check(f"checking standardisation on {Path(path).name}")
        volume = read_volume(path)
        plain = prepare_plain(bundle, volume)
        matched = prepare_for_bundle(reference_bundle, volume, network, device)
        plain_rows.append(slice_scores(network, _scored_slices(plain.slices), num_classes,
                                       device))
        std_rows.append(slice_scores(network, _scored_slices(matched.slices), num_classes,
                                     device))
    plain_mean = {k: float(np.mean([r[k] for r in plain_rows])) for k in plain_rows[0]}
    std_mean = {k: float(np.mean([r[k] for r in std_rows])) for k in std_rows[0]}
    better = (std_mean["consistency"] > plain_mean["consistency"]
              and std_mean["entropy"] < plain_mean["entropy"])
    numbers = (f"consistency {plain_mean['consistency']:.3f} -> {std_mean['consistency']:.3f}, "
               f"entropy {plain_mean['entropy']:.3f} -> {std_mean['entropy']:.3f} on "
               f"{len(chosen)} target(s)")
    reason = (f"the source model scores better on the standardised scans ({numbers})"
              if better else f"standardising them did not score better ({numbers})")
    line = (f"intensities standardised: {reason}" if better else
            f"intensities left as they are: {reason}; --standardise-always forces it")
    return StandardisationCheck(better, line, reason, plain_mean, std_mean, len(chosen))


def standardise_as_asked(bundle, mode: str, targets: Sequence[str | Path],
                         device: torch.device, network: torch.nn.Module | None = None,
                         check: Callable[[str], None] | None = None,
                         ) -> tuple[Any, StandardisationCheck | None]:
    """The bundle to run with for `mode` ("on": standardised; "off": as it is; "auto": as
    :func:`check_standardisation` decides on `targets`, with `network` or the bundle's own),
    and the verdict (None unless checked). A 3D bundle is not checked: "auto" standardises
    it. ModelError (naming the model file) when standardising needs a reference it lacks."""
    if mode == "off":
        return bundle, None
    verdict = None
    if mode == "auto" and bundle.dims == 2 and targets:
        verdict = check_standardisation(
            bundle, network if network is not None else bundle.build_network(device),
            targets, device, check)
    use = verdict is None or verdict.use
    return (standardised(bundle) if use else bundle), verdict
