"""The data of one adaptation run, on the model grid: target volumes (unlabelled), optional
paired source-modality images, labelled source images and reference labels (evaluation only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uda_core.engine.control import RunControl
from uda_core.errors import InputError
from uda_core.grid.labelled_slices import load_slices_for_bundle
from uda_core.grid.prepare import ModelInput, labels_to_grid
from uda_core.grid.prepared_store import ArrayStore, PreparedStore, ReadOnAccess
from uda_core.io import Volume
from uda_core.io.geometry import resample
from uda_core.io.intensity import foreground_mask, normalise
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import ModelBundle
from uda_core.models.inference import prepare_for_bundle
from uda_core.models.standardise import is_standardised


@dataclass
class SliceIndex:
    """Which slices training samples from: volume number and slice number, each (N,)."""

    volume: np.ndarray
    slice: np.ndarray


@dataclass
class AdaptationData:
    """Everything a run adapts on, already on each target's model grid.

    volumes: the target volumes as read (outputs are mapped back onto their grids); a
        sequence that reads each from its file when indexed for a streamed run.
    inputs: each target on its model grid (slices (Z, X, Y), positions (Z,)); for a streamed
        run a PreparedStore (slices memory-mapped from disk when indexed).
    paired: per target, the source-modality image of the same subject on the same model grid,
        normalised, (Z, X, Y) float32; None when not given.
    source_images / source_labels: labelled source slices (N, X, Y); None when not given.
    reference: per target, reference labels on the model grid (Z, X, Y) int64, used only to
        report Dice, never for training; None when not given.
    """

    volumes: Sequence[Volume]
    inputs: Sequence[ModelInput]
    paired: Sequence[np.ndarray] | None = None
    source_images: np.ndarray | None = None
    source_labels: np.ndarray | None = None
    reference: Sequence[np.ndarray] | None = None
    names: list[str] = field(default_factory=list)

    def training_slices(self, skip_empty: bool = True, min_fraction: float = 0.02) -> SliceIndex:
        """Slices to sample from; with skip_empty, only those where the head covers at least
        `min_fraction` of the slice (judged from intensities, no labels)."""
        volume_ids: list[np.ndarray] = []
        slice_ids: list[np.ndarray] = []
        for v, model_input in enumerate(self.inputs):
            z = np.arange(model_input.slices.shape[0])
            if skip_empty:
                fg = foreground_mask(model_input.slices)
                z = z[fg.reshape(len(z), -1).mean(axis=1) >= min_fraction]
            volume_ids.append(np.full(len(z), v))
            slice_ids.append(z)
        return SliceIndex(np.concatenate(volume_ids), np.concatenate(slice_ids))


def paired_on_target_grid(bundle: ModelBundle, paired: Volume, target: Volume,
                          target_input: ModelInput, align: str = "auto") -> np.ndarray:
    """The paired source-modality image on the target's model grid, normalised: (Z, X, Y).

    align: "world" trusts both files' world coordinates; "register" co-registers them with
    SimpleITK (affine, Mattes mutual information) first; "auto" registers unless both share
    one voxel grid (the usual case for a T1/T2 pair resampled by the scanner or a pipeline).
    """
    moving = paired
    if align == "register" or (align == "auto" and not paired.same_grid(target)):
        from uda_core.grid.coregister import align_affine
        moving = align_affine(fixed=target, moving=paired)
    on_grid = resample(moving.data, moving.affine, target_input.grid_affine,
                       target_input.grid_shape, order=1, fill=float(np.min(moving.data)))
    slices = np.ascontiguousarray(np.moveaxis(on_grid, 2, 0))
    return normalise(slices, bundle.normalisation).astype(np.float32, copy=False)


def load_adaptation_data(bundle: ModelBundle, targets: Sequence[str | Path],
                         paired: Sequence[str | Path] | None = None,
                         source: Sequence[tuple[Path, Path]] | None = None,
                         reference: Sequence[str | Path] | None = None,
                         align: str = "auto",
                         cache_dir: str | Path | None = None,
                         control: RunControl | None = None) -> AdaptationData:
    """Read and prepare a run's data. `paired` and `reference` are matched to `targets` by
    position (one per target); `source` is a list of (image, labels) paths.

    cache_dir: stream the targets from disk (uda_core.grid.prepared_store): each target is
    read, prepared and written to CACHE_DIR one at a time, the run then reads the slices it
    needs from there and the volumes again from their files when it maps outputs back, so
    memory does not grow with the number of targets. The batches are the same as without
    it.

    control: its cancellation point is visited before each file is read and each volume
    prepared (RunCancelled once Stop is pressed)."""
    check = (control or RunControl()).check
    for what, items in (("paired source-modality image", paired), ("reference label map",
                                                                      reference)):
        if items is not None and len(items) != len(targets):
            raise InputError(f"{len(items)} {what}(s) given for {len(targets)} target volumes; "
                             "give one per target, in the same order")
    # a standardised bundle finds each brain with the source network
    first_pass = bundle.build_network() if is_standardised(bundle) else None
    streamed = cache_dir is not None
    volumes: list[Volume] = []
    inputs: list[ModelInput] | PreparedStore = (PreparedStore(Path(cache_dir) / "targets")
                                                if cache_dir is not None else [])
    on_grid: dict[str, list[np.ndarray] | ArrayStore] = {
        name: (ArrayStore(Path(cache_dir) / name, name) if cache_dir is not None else [])
        for name, given in (("paired", paired), ("reference", reference)) if given is not None}
    for k, target in enumerate(targets):
        check(f"reading {Path(target).name}")
        volume = read_volume(target)
        check(f"preparing {Path(target).name}")
        model_input = prepare_for_bundle(bundle, volume, first_pass)
        inputs.append(model_input)
        if not streamed:
            volumes.append(volume)
        if paired is not None:
            on_grid["paired"].append(paired_on_target_grid(bundle, read_volume(paired[k]),
                                                           volume, model_input, align))
        if reference is not None:
            on_grid["reference"].append(labels_to_grid(read_labels(reference[k]),
                                                       model_input))
        del volume, model_input
    data = AdaptationData(ReadOnAccess(targets) if streamed else volumes, inputs,
                          names=[Path(p).name for p in targets], paired=on_grid.get("paired"),
                          reference=on_grid.get("reference"))
    if source:
        check("reading the labelled source images")
        slices = load_slices_for_bundle(bundle, source)
        data.source_images, data.source_labels = slices.images, slices.labels
    return data
