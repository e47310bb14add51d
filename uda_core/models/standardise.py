"""Intensity standardisation: each target scan's bias field removed and its brain histogram
matched to the source's.

First N4 bias-field correction (uda_core.io.bias_field): the smooth intensity non-uniformity
of another coil or a 3 T B1 field, which no histogram mapping can undo because it brightens
one part of the brain and not another. Then quantile matching. A scanner or protocol change
of the same weighting (another T1w sequence) mostly moves the tissue intensities; mapping
each target's normalised intensity percentiles inside the brain onto those of the source
training data (piecewise-linear quantile matching, Nyul & Udupa 1999) undoes much of it with
no training. Inside the brain, not the head: scalp, fat and muscle
vary between subjects and dominate a whole-head histogram (matching whole heads lowered the
demo model's Dice on validation subjects, BENCHMARKS.md). The brain of a target is what the
network itself labels as non-background in a first pass; the source's is the labelled brain
of the training volumes.

The model bundle records the source percentiles (``intensity_reference``); a *standardised*
bundle carries them in its normalisation spec (``normalisation["match_quantiles"]``, with
``normalisation["bias_field"] = "n4"``; bundles standardised before the bias correction existed
lack that key and are applied as they were), and
uda_core.models.inference.prepare_for_bundle applies it, so every use of that bundle
(adaptation, ``uda predict``, the app) standardises its input the same way. The brain is always
found by the bundle's own network: during an adaptation the source network's (the data are
prepared once, before any update), when an adapted bundle is applied later its adapted
network's; so an adapted model re-applied to its own targets can differ slightly from the
run's masks at the brain's edge (for ``standardise`` itself, which changes no weight, the two
are the same).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from uda_core.errors import ModelError
from uda_core.io.bias_field import N4
from uda_core.io.intensity import REFERENCE_PERCENTILES
from uda_core.models.bundle import ModelBundle


def intensity_reference(volume_quantiles: Iterable[np.ndarray],
                        percentiles=REFERENCE_PERCENTILES) -> dict:
    """The bundle's ``intensity_reference`` from the source volumes' brain percentiles (one
    row per volume: :func:`uda_core.io.intensity.region_quantiles` of a volume normalised the
    way the model expects, inside its labelled brain, at `percentiles`): their mean."""
    rows = [np.asarray(q, dtype=np.float64) for q in volume_quantiles]
    if not rows:
        raise ValueError("an intensity reference needs at least one source volume")
    values = np.maximum.accumulate(np.mean(rows, axis=0))
    return {"percentiles": [float(p) for p in percentiles],
            "values": [round(float(v), 6) for v in values]}


#: The normalisation keys that :func:`standardised` adds: corrections of each input towards
#: the source training scans (a guide reading the same corrected input is not affected).
STANDARDISATION_KEYS = ("bias_field", "match_quantiles")


def is_standardised(bundle: ModelBundle) -> bool:
    """True when the bundle's normalisation matches each input to a source reference."""
    return bool(bundle.normalisation.get("match_quantiles"))


def standardised(bundle: ModelBundle) -> ModelBundle:
    """A copy of `bundle` whose normalisation standardises every input (N4 bias field, then
    quantiles) to its ``intensity_reference`` (validation subjects 40-45, demo:brain-t1, mean
    Dice standardised without -> with N4: t1 0.863 -> 0.873, protocol 0.775 -> 0.822, mprage
    0.740 -> 0.747, highfield 0.676 -> 0.753; BENCHMARKS.md). ModelError (naming the model
    file) when it records none."""
    if is_standardised(bundle):
        return bundle
    if not bundle.intensity_reference:
        raise ModelError("records no source intensity reference, so its input cannot be "
                         "standardised (models trained with `uda train-source` record one)",
                         bundle.source)
    normalisation = dict(bundle.normalisation, bias_field=N4,     # STANDARDISATION_KEYS
                         match_quantiles=dict(bundle.intensity_reference))
    return dataclasses.replace(bundle, normalisation=normalisation)
