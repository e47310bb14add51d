"""Segmenting volumes with a model bundle: the work behind `uda predict`.

2D bundles run slice by slice (:func:`predict_slices`), 3D bundles by sliding window over the
whole model grid (:mod:`uda_core.models.sliding_window`); both give (C, Z, X, Y) probabilities
on the model grid, mapped back onto the input's own grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from uda_core.errors import ModelError
from uda_core.grid.prepare import (
    ModelInput,
    prepare_volume,
    prepare_volume_3d,
    probabilities_to_input_grid,
)
from uda_core.io import Volume
from uda_core.io.geometry import covering_grid
from uda_core.io.intensity import match_quantiles, region_quantiles
from uda_core.models.brain_region import extracts_brain, label_map
from uda_core.models.bundle import ModelBundle
from uda_core.models.sliding_window import predict_volume, window_count
from uda_core.models.standardise import is_standardised


@torch.no_grad()
def predict_slices(network: torch.nn.Module, slices: np.ndarray, device: torch.device,
                   batch_size: int = 16,
                   on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Softmax probabilities (C, Z, X, Y) float32 for slices (Z, X, Y), in batches.

    on_batch(n) is called after each batch with the number of slices done in it (progress).
    """
    network.eval()
    out = None
    for start in range(0, slices.shape[0], batch_size):
        batch = torch.from_numpy(slices[start:start + batch_size]).unsqueeze(1).to(device)
        probs = torch.softmax(network(batch).float(), dim=1).cpu().numpy()
        if out is None:
            out = np.empty((probs.shape[1], slices.shape[0], *probs.shape[2:]), np.float32)
        out[:, start:start + probs.shape[0]] = np.moveaxis(probs, 1, 0)
        if on_batch is not None:
            on_batch(probs.shape[0])
    assert out is not None, "no slices to predict"
    return out


#: Passes of (find the brain, match its percentiles): the second finds the brain on the
#: already standardised scan. Chosen on validation subjects 40-42 (BENCHMARKS.md): one pass
#: 0.742 / 0.737 / 0.663 mean Dice on protocol / mprage / highfield, two 0.746 / 0.738 / 0.673
#: (source-only 0.746 / 0.677 / 0.634).
STANDARDISE_PASSES = 2

#: Fewer brain voxels than this on the model grid: the first pass found no brain to match,
#: and a standardised bundle leaves the scan as normalised (nothing to standardise on).
MIN_BRAIN_VOXELS = 500


def prepare_for_bundle(bundle: ModelBundle, volume: Volume,
                       network: torch.nn.Module | None = None,
                       device: torch.device | str = "cpu") -> ModelInput:
    """`volume` on the model grid the bundle was trained for, normalised as it expects.

    A standardised bundle (``normalisation["match_quantiles"]``, uda_core.models.standardise)
    also matches the scan's intensity percentiles inside the brain to the source's: the brain
    is what `network` (the bundle's own when None) labels non-background, first on the
    normalised slices, then on the standardised ones (STANDARDISE_PASSES); the percentiles
    are always those of the normalised slices inside the latest brain.

    A 3D bundle's grid covers the whole volume (prepare_volume_3d). ModelError for a network
    that takes several input channels (one volume per channel is not supported yet)."""
    return standardise_prepared(bundle, prepare_plain(bundle, volume), network, device)


def prepare_plain(bundle: ModelBundle, volume: Volume) -> ModelInput:
    """`volume` on the bundle's model grid, normalised, without standardisation (no network:
    what a reading worker process does)."""
    check_single_channel(bundle)
    if bundle.dims == 3:
        return prepare_volume_3d(volume, bundle.spacing_mm, bundle.normalisation)
    return prepare_volume(volume, bundle.spacing_mm, bundle.in_plane_shape,
                          bundle.normalisation)


def standardise_prepared(bundle: ModelBundle, model_input: ModelInput,
                         network: torch.nn.Module | None = None,
                         device: torch.device | str = "cpu") -> ModelInput:
    """For a standardised bundle, `model_input` (from prepare_plain) with its intensities
    matched to the source's (see prepare_for_bundle); otherwise `model_input` unchanged."""
    if not is_standardised(bundle):
        return model_input
    reference = bundle.normalisation["match_quantiles"]
    device = torch.device(device)
    net = bundle.build_network(device) if network is None else network
    normalised = model_input.slices
    target = np.asarray(reference["values"], dtype=np.float64)
    for _ in range(STANDARDISE_PASSES):
        brain = predict_slices(net, model_input.slices, device).argmax(axis=0) > 0
        if int(brain.sum()) < MIN_BRAIN_VOXELS:
            break
        own = region_quantiles(normalised, brain, reference["percentiles"])
        model_input.slices = match_quantiles(normalised, own, target)
    return model_input


def check_single_channel(bundle: ModelBundle) -> None:
    """ModelError when the network takes more than one input channel."""
    if bundle.in_channels != 1:
        raise ModelError(f"the network takes {bundle.in_channels} input channels (e.g. several "
                         "MRI contrasts at once); multi-channel input is not supported yet",
                         bundle.source)


def expected_windows(bundle: ModelBundle, volume: Volume) -> int | None:
    """How many windows on_batch will count for `volume` with a 3D bundle (None for a 2D
    one, whose slice count is known only on its model grid)."""
    if bundle.dims != 3 or bundle.window is None:
        return None
    _, shape = covering_grid(volume.affine, volume.shape, bundle.spacing_mm)
    order = [shape[a] for a in bundle.window["axes"]]
    return window_count(order, bundle.window["roi_size"], float(bundle.window["overlap"]))


def units(window: dict | None) -> str:
    """What on_batch counts: "slice" for 2D networks, "window" for 3D ones."""
    return "slice" if window is None else "window"


def predict_grid(network: torch.nn.Module, model_input: ModelInput, device: torch.device,
                 window: dict | None = None, batch_size: int = 16,
                 on_batch: Callable[[int], None] | None = None,
                 mirror: bool = True) -> np.ndarray:
    """Probabilities (C, Z, X, Y) on the model grid: slice by slice (window None, a 2D network)
    or by sliding window (a 3D bundle's ``window``; ``batch_size`` windows per call)."""
    if window is None:
        return predict_slices(network, model_input.slices, device, batch_size, on_batch)
    probs = predict_volume(network, np.moveaxis(model_input.slices, 0, -1)[None], window,
                           device, max(1, batch_size), on_batch, mirror)
    return np.moveaxis(probs, -1, 1)


def segment_volume(bundle: ModelBundle, network: torch.nn.Module, volume: Volume,
                   device: torch.device, batch_size: int = 16,
                   on_batch: Callable[[int], None] | None = None,
                   mirror: bool = True) -> Volume:
    """The label map of `volume` on its own grid (same shape and affine), as uint8; a
    whole-head bundle's brain region cleaned (uda_core.models.brain_region).

    batch_size: slices per batch (2D) or windows per batch (3D); mirror: 3D test-time
    mirroring when the bundle asks for it."""
    window = bundle.window if bundle.dims == 3 else None
    return segment_prepared(network, prepare_for_bundle(bundle, volume, network, device),
                            volume, device, batch_size, on_batch, window=window, mirror=mirror,
                            brain=extracts_brain(bundle))


def segment_prepared(network: torch.nn.Module, model_input: ModelInput, volume: Volume,
                     device: torch.device, batch_size: int = 16,
                     on_batch: Callable[[int], None] | None = None, *,
                     window: dict | None = None, mirror: bool = True,
                     brain: bool = False) -> Volume:
    """Like segment_volume, for a volume already on its model grid (`model_input`); `window`:
    a 3D bundle's sliding-window settings (None: a 2D network); `brain`: clean the
    non-background region as a brain mask (``extracts_brain(bundle)``)."""
    probs = predict_grid(network, model_input, device, window, batch_size, on_batch, mirror)
    on_input = probabilities_to_input_grid(probs, model_input, volume)
    labels = label_map(on_input, brain)
    return volume.with_data(labels, meta={**volume.meta, "kind": "labels"})
