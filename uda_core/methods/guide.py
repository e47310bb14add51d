"""A guide: a second, frozen model whose predictions help make pseudo-labels (selftrain).

The typical guide is ``demo:brain-t1-robust``: trained with random tissue contrasts, it is
worse than the plain model on the plain model's own contrast but survives contrast changes
that defeat it (BENCHMARKS.md). Self-training the user's network on labels that blend the
two gives the network the guide's robustness while keeping its own skill.

The guide sees exactly the tensors the adapted network sees, so it must take the same input:
the same classes, grid (spacing, in-plane shape, orientation, slice axis), intensity
normalisation and dimensionality. It is loaded like any model file (weights only, no code
run) and never trained.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from uda_core.errors import ModelError
from uda_core.models.bundle import ModelBundle, load_model
from uda_core.models.standardise import STANDARDISATION_KEYS

#: What a guide must share with the adapted model (ModelBundle fields) to see its tensors.
INPUT_CONTRACT = ("class_names", "dims", "spacing_mm", "in_plane_shape", "orientation",
                  "slice_axis", "normalisation", "window")


def _as_read(name: str, value: object) -> object:
    """A contract field as the guide reads it: a standardised model's N4 correction and
    quantile matching (uda_core.models.standardise.STANDARDISATION_KEYS) correct each target
    towards the source training scans before either network sees it, so they are left out."""
    if name == "normalisation" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in STANDARDISATION_KEYS}
    return value


def differing_input(guide: ModelBundle, bundle: ModelBundle) -> list[str]:
    """The :data:`INPUT_CONTRACT` fields in which `guide` and `bundle` differ ([] = it fits)."""
    return [name for name in INPUT_CONTRACT
            if _as_read(name, getattr(guide, name))
            != _as_read(name, getattr(bundle, name, None))]


def _differ(names: list[str]) -> str:
    return "differ" if len(names) > 1 else "differs"


@functools.lru_cache(maxsize=4)
def _guide_bundle(reference: str) -> ModelBundle:
    return load_model(reference)


def guide_mismatch(reference: str, bundle: ModelBundle) -> str:
    """"" when the guide `reference` takes `bundle`'s input, else one line saying why not
    (for method lists and missing-needs messages; the guide's file is read once)."""
    try:
        differing = differing_input(_guide_bundle(reference), bundle)
    except ModelError as error:
        return str(error)
    if not differing:
        return ""
    return (f"a model that takes the input of its guide {reference} (its "
            f"{', '.join(differing)} {_differ(differing)})")


def check_guide(reference: str, bundle: ModelBundle) -> ModelBundle:
    """The guide's bundle, read from `reference`; ModelError naming the guide when it cannot
    be read or does not take `bundle`'s input (:data:`INPUT_CONTRACT`)."""
    guide = load_model(reference)
    differing = differing_input(guide, bundle)
    if differing:
        raise ModelError("cannot guide this model: its " + ", ".join(differing)
                         + f" {_differ(differing)} from the adapted model's (a guide must "
                         "take the same input and predict the same classes)", reference)
    return guide


def guide_network(reference: str, bundle: ModelBundle, device: torch.device) -> nn.Module:
    """The guide model named by `reference` (a bundle file or a built-in name) as a frozen
    network in eval mode on `device` (checked by :func:`check_guide`)."""
    network = check_guide(reference, bundle).build_network(device)
    for p in network.parameters():
        p.requires_grad_(False)
    return network.eval()
