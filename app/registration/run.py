"""The registration panel's background work, free of Qt: read, register, save.

:func:`run_registration` runs on a background thread (the panel starts it with
:func:`app.worker.run_in_background`) and reports only through the callables it is given.
Saving uses :func:`uda_core.runs.register.write_outputs`, as `uda reg apply` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from uda_core.errors import InputError
from uda_core.io import Volume
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle.plain import modality_words
from uda_core.runs.register import RegistrationResult, register_volumes, resample_onto
from uda_core.scores.registration import CONTRAST_MISMATCH_R, pair_similarity

SITK = "sitk"  # the model choice that means SimpleITK's B-spline baseline (no network)
RESAMPLE_LABEL = "Resample moving onto fixed grid when they differ"
REFINE_3D_LABEL = "Refine in 3D when pre-aligned (different subjects)"


@dataclass
class RegistrationRequest:
    """One run's inputs: files, the model ("sitk", a built-in name or a bundle path), the
    torch device ("auto", "cpu", "cuda", "mps"), whether to resample a moving image that
    is not on the fixed grid, and whether to refine the result in 3D when the pair needed
    pre-alignment (`uda reg apply --refine-3d auto`, its default: scans of different
    subjects; False: `--refine-3d off`)."""

    fixed: Path
    moving: Path
    moving_labels: Path | None = None
    model: str = SITK
    device: str = "auto"
    resample_moving: bool = False
    refine_3d: bool = True

    def inputs(self) -> list[Path]:
        """The files this run reads (never to be written)."""
        return [p for p in (self.fixed, self.moving, self.moving_labels) if p is not None]


@dataclass
class RegistrationOutcome:
    """What a finished run gives the GUI: the inputs as read, the core's result (every
    volume on the fixed grid) and the layer tuples to show (built off the GUI thread)."""

    request: RegistrationRequest
    fixed: Volume
    moving: Volume
    result: RegistrationResult
    layers: list = field(default_factory=list)
    # pair_similarity of the moving image (on the fixed grid) before and of the warped after
    similarity_before: dict = field(default_factory=dict)
    similarity_after: dict = field(default_factory=dict)
    warning: str = ""   # one line when the pair does not suit the model ("" when it does)


def _grid_words(volume: Volume) -> str:
    spacing = " x ".join(f"{s:.3g}" for s in volume.spacing)
    return f"{' x '.join(map(str, volume.shape))} voxels of {spacing} mm"


def grid_mismatch_message(fixed: Volume, moving: Volume) -> str:
    """The moving scan is not on the fixed scan's grid, in plain words (one line)."""
    what = ("lies elsewhere in space (same size, other position or orientation)"
            if moving.shape == fixed.shape else f"has {_grid_words(moving)}")
    return (f"The moving scan {Path(str(moving.source)).name} {what}, the fixed scan "
            f"{Path(str(fixed.source)).name} has {_grid_words(fixed)}. Tick “{RESAMPLE_LABEL}” "
            "to resample it onto the fixed scan's grid, then press Register again.")


def contrast_warning(bundle, similarity: dict) -> str:
    """One line when a registration model meets a moving scan of another contrast than the
    fixed one (intensity correlation inside the head below CONTRAST_MISMATCH_R)."""
    r = similarity.get("correlation", float("nan"))
    if bundle is None or not r < CONTRAST_MISMATCH_R:
        return ""
    trained = modality_words(bundle.modality)
    return (f"The moving scan's contrast looks unlike the fixed scan's (intensity correlation "
            f"{r:+.2f} inside the head, {CONTRAST_MISMATCH_R:+.2f} or more expected for one "
            f"contrast). This model was trained on pairs of {trained} scans of one contrast, "
            "so its warp is likely wrong: choose a moving scan of the fixed scan's contrast, or "
            "the SimpleITK baseline, which handles two contrasts.")


def _same_grid_inputs(request: RegistrationRequest, fixed: Volume, moving: Volume,
                      labels: Volume | None) -> tuple[Volume, Volume | None]:
    """(moving, labels) on the fixed grid, or the core's one-line InputError plus a hint."""
    if labels is not None and not labels.same_grid(moving):
        raise InputError(f"is not on the grid of the moving image {request.moving}; labels "
                         "must share their image's grid", request.moving_labels)
    if moving.same_grid(fixed):
        return moving, labels
    if not request.resample_moving:
        raise InputError(grid_mismatch_message(fixed, moving))
    moved_labels = None if labels is None else resample_onto(labels, fixed, labels=True)
    return resample_onto(moving, fixed), moved_labels


def run_registration(request: RegistrationRequest,
                     progress: Callable[[int, int], None] | None = None,
                     cancel: Callable[[], bool] | None = None,
                     make_layers: Callable[[RegistrationOutcome], list] | None = None
                     ) -> RegistrationOutcome:
    """Read the files, register moving onto fixed, and build the layers to show.

    Args:
        request: files, model, device, resampling choice.
        progress: progress(done, total) in slices (then the 3D refinement's steps), from
            this (background) thread.
        cancel: polled between slices and 3D steps; True stops the run with
            UdaError("cancelled").
        make_layers: outcome -> layer tuples, run here so the GUI thread only adds them.

    Raises:
        UdaError (one line naming the file) for unreadable inputs, grids that differ
        without ``resample_moving``, an unusable model or device, or a cancelled run.
    """
    fixed = read_volume(request.fixed)
    moving_as_read = read_volume(request.moving)
    labels = read_labels(request.moving_labels) if request.moving_labels else None
    moving, labels = _same_grid_inputs(request, fixed, moving_as_read, labels)
    bundle = network = device = None
    method = "sitk" if request.model == SITK else "network"
    if method == "network":
        from uda_core.engine.device import resolve_device
        from uda_core.models.bundle.registration import load_registration_model

        device = resolve_device(request.device)
        bundle, network = load_registration_model(request.model, device)
    before = pair_similarity(fixed.data, moving.data)
    from uda_core.spatial.volume_refine import VolumeRefinement

    result = register_volumes(bundle, fixed, moving, labels, device=device or "cpu",
                              method=method, network=network, progress=progress,
                              cancel=cancel,
                              refine_3d=VolumeRefinement() if request.refine_3d else None,
                              refine_3d_mode="auto")
    outcome = RegistrationOutcome(request, fixed, moving_as_read, result,
                                  similarity_before=before,
                                  similarity_after=pair_similarity(fixed.data,
                                                                   result.warped.data),
                                  warning=contrast_warning(bundle, before))
    if make_layers is not None:
        outcome.layers = make_layers(outcome)
    return outcome


