"""The registration panel's adaptation, free of Qt: what to run, the live preview picture,
and saving the adapted model.

:class:`RegAdaptRequest` runs on the app's one worker (:class:`app.worker.RunController`,
as the adaptation panel's runs do): its ``execute`` is
:func:`uda_core.runs.adapt_registration.run_reg_adaptation`, the call behind `uda reg adapt`,
so the run folder holds what that command writes (adapted.pt, metrics.jsonl, run.json,
checkpoints/) and Stop is the engine's cancellation.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uda_core.exports.overlay import checkerboard, robust_unit
from uda_core.io.atomic import atomic_output
from uda_core.methods.mcd import MCDRegistration
from uda_core.runs.adapt_registration import run_reg_adaptation

#: (value, label) of the discrepancy choices, the recommended one first.
DISCREPANCY_CHOICES = (("pemd", "pemd (recommended)"), ("swd", "swd"), ("l1", "l1"))
DEFAULT_STEPS = MCDRegistration.default_steps   # as `uda reg adapt`
PREVIEW_EVERY = 5        # steps between preview refreshes (one pair's warp: milliseconds)
PREVIEW_TILE_PX = 8      # checkerboard tile edge, model-grid pixels


@dataclass
class RegAdaptRequest:
    """One MCD adaptation of a registration model to the user's pair(s).

    fixed, moving: volume files, one moving per fixed (the moving ones are resampled onto
    the model grid of their fixed one, as `uda reg adapt --fixed --moving` does).
    """

    model: str                  # registration bundle file or built-in name (demo:reg-t1)
    fixed: list[str]
    moving: list[str]
    out_dir: str | Path         # run folder (nothing there yet)
    discrepancy: str = "pemd"   # "pemd", "swd" or "l1"
    steps: int = DEFAULT_STEPS
    device: str = "auto"
    preview_every: int = PREVIEW_EVERY
    threads: int | None = None  # torch CPU threads on the worker thread (None: unchanged)
    finishing_message = "Writing the adapted model…"

    def execute(self, listeners, control) -> dict:
        """Run it (on the worker's thread); returns the run summary (run.json)."""
        return run_reg_adaptation(
            self.model, self.out_dir, discrepancy=self.discrepancy,
            fixed=[str(p) for p in self.fixed], moving=[str(p) for p in self.moving],
            engine_settings={"steps": int(self.steps),
                             "preview_every": int(self.preview_every)},
            device=self.device, listeners=listeners, control=control)


def preview_picture(event) -> np.ndarray:
    """(W, 2H) float32 in 0..1, for display: the warped moving slice (left) and the
    checkerboard of fixed and warped tiles (right) of a
    :class:`~uda_core.engine.events.RegPreviewEvent`, each (H, W) model-grid slice turned a
    quarter (its rows run along x, left to right on screen)."""
    board = checkerboard(event.fixed, event.warped, PREVIEW_TILE_PX)
    parts = [np.rot90(robust_unit(event.warped)), np.rot90(board)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def save_adapted(summary: dict, destination: str | Path, overwrite: bool = False) -> Path:
    """Copy the run's adapted bundle to ``destination`` atomically (complete or absent);
    FileExistsError when it exists and ``overwrite`` is False (the panel asks first)."""
    source, destination = Path(summary["adapted_model"]), Path(destination)
    if destination.resolve() == source.resolve():
        return destination
    with atomic_output(destination, overwrite=overwrite) as tmp:
        shutil.copyfile(source, tmp)
    return destination
