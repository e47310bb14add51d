"""Does a scan suit a model? Cheap checks run before an adaptation, one line per mismatch.

Each check looks at one target volume and the model bundle and says, in words a clinician
reads, what does not fit; none refuses the scan (adaptation exists for shifted scans), they
warn before Start. Checks:

- **skull present** for a model that needs skull-stripped input (``skull_stripped_input``):
  the scan's foreground (Otsu, :func:`uda_core.io.intensity.foreground_mask`) holds more
  tissue than a brain can. Measured on the demo scans and Colin27 (2026-12-01): whole heads
  2.6-3.4 L of foreground, skull-stripped brains 1.7-1.9 L (Colin27 ``ch2`` 3.1 L,
  ``ch2bet`` 1.7 L); adult intracranial volume is at most about 2 L.
- **named for another contrast**: a BIDS-style file name suffix (``_T2w``, ``_FLAIR``, ...) or
  a DICOM series description naming a contrast other than the model's ``modality``.
- **contrast the model does not recognise**: the network, run on a few central slices of
  the head (8 slices: about 0.5 s on one CPU core), labels less than
  :data:`MIN_BRAIN_SHARE` of the head's foreground as tissue. Measured with demo:brain-t1:
  T1w, protocol-shifted, PD-weighted scans and Colin27 0.89-1.2 (with or without skull),
  T2-weighted scans 0.00-0.03.

Across the targets of one run, :func:`contrast_disagreement` finds those whose contrast
differs from the others' (a T1 and a T2 scan given together): named for different contrasts,
or recognised by the model on one side of :data:`MIN_BRAIN_SHARE` and not on the other (the
same measured gap: 0.89-1.2 against 0.00-0.03). Also a warning, not a refusal: a run over
mixed contrasts is legal (one compromise model for a mixed cohort), the signs are cues, not
proofs (a file may be misnamed, a lesioned brain may score low), and the line says what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from uda_core.grid.prepare import prepare_volume
from uda_core.io import Volume
from uda_core.io.intensity import foreground_mask
from uda_core.models.bundle import ModelBundle
from uda_core.models.inference import predict_slices

#: Foreground volume (litres) above which a scan holds more than a brain: a head.
MAX_BRAIN_LITRES = 2.25
#: Share of the head's foreground the network must label as tissue for it to count as
#: recognising the contrast (on the central slices).
MIN_BRAIN_SHARE = 0.25
#: Central slices (of those showing the head) the recognition check runs the network on.
RECOGNITION_SLICES = 8

_CONTRASTS = {   # name pattern (word-bounded, case-insensitive) -> contrast
    "T1w": r"t1w?|mprage|spgr|tfl3d|bravo",
    "T2w": r"t2w?|tse2?|space_t2",
    "FLAIR": r"flair",
    "PD": r"pdw?|proton.?density",
}


def foreground_litres(volume: Volume) -> float:
    """The volume of the scan's foreground (voxels brighter than the Otsu threshold), L."""
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    return float(foreground_mask(np.asarray(volume.data)).sum()) * voxel_ml / 1000.0


def named_contrast(path: str | Path | None, volume: Volume | None = None) -> str | None:
    """The contrast a file or DICOM series is named for ("T1w", "T2w", "FLAIR", "PD"), from
    the BIDS suffix of the file name or the DICOM series description; None when neither
    names one (or names several)."""
    texts = []
    if path is not None:
        name = Path(path).name
        texts.append(re.sub(r"\.(nii|nii\.gz|mgz|mgh|mha|mhd|nrrd|nhdr)$", "", name, flags=re.I))
    if volume is not None:
        texts.append(str(volume.meta.get("series_description", "")))
    found = set()
    for text in texts:
        words = re.split(r"[^a-z0-9]+", text.lower())
        for contrast, pattern in _CONTRASTS.items():
            if any(re.fullmatch(pattern, w) for w in words if w):
                found.add(contrast)
    return found.pop() if len(found) == 1 else None


def tissue_share(bundle: ModelBundle, volume: Volume, network: torch.nn.Module | None = None,
                 n_slices: int = RECOGNITION_SLICES) -> float:
    """The share of the head's foreground the network labels non-background on `n_slices`
    central slices of the head (on the model grid); 0..~1.2 (the model's tissue may reach
    a little past the normalised foreground)."""
    model_input = prepare_volume(volume, bundle.spacing_mm, bundle.in_plane_shape,
                                 bundle.normalisation)
    net = bundle.build_network("cpu") if network is None else network
    return tissue_share_of_slices(model_input.slices, net, torch.device("cpu"), n_slices)


def tissue_share_of_slices(slices: np.ndarray, network: torch.nn.Module,
                           device: torch.device, n_slices: int = RECOGNITION_SLICES) -> float:
    """:func:`tissue_share` of slices already on the model grid ((Z, X, Y) float32, as the
    network takes them); the network's train/eval mode is left as it was."""
    head = foreground_mask(slices)
    showing = np.flatnonzero(head.reshape(len(head), -1).mean(axis=1) > 0.02)
    if showing.size == 0:
        return 0.0
    pick = showing[np.unique(np.linspace(0.3 * (showing.size - 1), 0.7 * (showing.size - 1),
                                         n_slices).round().astype(int))]
    training = network.training
    try:
        with torch.no_grad():
            probs = predict_slices(network, np.ascontiguousarray(slices[pick]), device)
    finally:
        network.train(training)
    tissue = probs.argmax(axis=0) > 0
    return float(tissue.sum()) / max(int(head[pick].sum()), 1)


def input_mismatches(bundle: ModelBundle, volume: Volume, path: str | Path | None = None,
                     network: torch.nn.Module | None = None) -> list[str]:
    """One line per mismatch between `volume` (a target scan, read from `path`) and the model,
    each naming the file; empty when none is found. `network`: the bundle's, built once by a
    caller checking many scans (built here when None)."""
    name = Path(path).name if path is not None else (volume.source or "the scan")
    lines = []
    if bundle.skull_stripped_input:
        litres = foreground_litres(volume)
        if litres > MAX_BRAIN_LITRES:
            lines.append(f"{name}: the scan seems to include the skull and scalp ({litres:.1f} L "
                         f"of tissue; a brain is under {MAX_BRAIN_LITRES:g} L), but this model "
                         "needs skull-stripped input: strip the skull first")
    modality = str(bundle.modality or "") or "training"
    named = named_contrast(path, volume)
    named_other = named if named and named.lower() != modality.lower() else None
    share = tissue_share(bundle, volume, network)
    advice = "adaptation is needed (ddm with paired scans works best across contrasts)"
    if share < MIN_BRAIN_SHARE:
        called = f" (named {named_other})" if named_other else ""
        lines.append(f"{name}: the model finds brain tissue in only {100 * share:.0f} % of the "
                     f"head: the contrast{called} looks unlike its {modality} data; {advice}")
    elif named_other:
        lines.append(f"{name}: named as a {named_other} scan, but the model was trained on "
                     f"{modality} data; {advice}")
    return lines


def contrast_disagreement(paths: Sequence[str | Path],
                          slices: Iterable[np.ndarray] | None = None,
                          network: torch.nn.Module | None = None,
                          device: torch.device | None = None) -> str | None:
    """One line naming the target(s) whose contrast differs from the other targets' and what
    differs, or None when they agree (or are fewer than two).

    paths: the targets' files (their names are read for a contrast: :func:`named_contrast`);
    slices: each target's slices on the model grid ((Z, X, Y), 2D models; read once, in
    order, so a generator keeps one in memory), with the model's `network` (on `device`) to
    see which it recognises (:func:`tissue_share_of_slices`); None: names only. The odd
    ones are the smaller group (on a tie: the unrecognised, or those named second)."""
    if len(paths) < 2:
        return None
    names = [Path(p).name for p in paths]
    named = [named_contrast(p) for p in paths]
    shares = None
    if slices is not None and network is not None:
        shares = [tissue_share_of_slices(s, network, device or torch.device("cpu"))
                  for s in slices]
    odd: list[int] = []
    if shares is not None and len({s >= MIN_BRAIN_SHARE for s in shares}) == 2:
        low = [k for k, s in enumerate(shares) if s < MIN_BRAIN_SHARE]
        high = [k for k, s in enumerate(shares) if s >= MIN_BRAIN_SHARE]
        odd = low if len(low) <= len(high) else high
    elif len({n for n in named if n}) > 1:
        groups: dict[str, list[int]] = {}
        for k, n in enumerate(named):
            if n:
                groups.setdefault(n, []).append(k)
        majority = max(groups.values(), key=len)   # the first named, on a tie
        odd = [k for k in range(len(paths)) if named[k] and k not in majority]
    if not odd:
        return None
    rest = [k for k in range(len(paths)) if k not in odd]

    def describe(group: list[int]) -> str:
        words = []
        called = sorted({n for n in (named[k] for k in group) if n})
        if called:
            words.append("named " + "/".join(called))
        if shares is not None and shares[group[0]] < MIN_BRAIN_SHARE:
            values = [100 * shares[k] for k in group]
            span = (f"{min(values):.0f} %" if round(min(values)) == round(max(values))
                    else f"{min(values):.0f}-{max(values):.0f} %")
            words.append(f"the model finds brain tissue in only {span} of the head")
        elif shares is not None:
            words.append("a contrast the model recognises")
        return "; ".join(words)

    listed = ", ".join(names[k] for k in odd[:3]) + (f" and {len(odd) - 3} more"
                                                      if len(odd) > 3 else "")
    other = names[rest[0]] if len(rest) == 1 else f"the other {len(rest)} targets"
    return (f"the targets disagree in contrast: {listed} ({describe(odd)}) unlike {other} "
            f"({describe(rest)}); one adapted model fits mixed contrasts poorly: adapt each "
            "contrast in its own run")
