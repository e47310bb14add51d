"""What a run tells whoever listens (a progress bar, a metrics file, the GUI).

Listeners are plain callables taking one event. Events carry plain numbers and numpy arrays,
never tensors on a device, so a GUI thread can hold them safely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepEvent:
    step: int                 # steps done so far (1-based after the first update)
    total: int                # planned steps
    losses: dict[str, float]  # each loss term of this step
    elapsed_s: float          # wall time since the run started (excluding pauses)


@dataclass
class ScoreEvent:
    step: int
    scores: dict[str, float]          # label-free scores (see label_free.HIGHER_IS_BETTER)
    reference: dict[str, float] | None  # Dice against user-given labels (evaluation only)
    selection: float                  # the score that chooses the checkpoint
    is_best: bool


@dataclass
class PreviewEvent:
    step: int                 # 0: the prediction before any update (the "before" mask)
    volume_index: int
    labels: np.ndarray        # (Z, X, Y) uint8 on the model grid of that target volume
    input_labels: np.ndarray | None = None  # (X, Y, Z) uint8 on the target's own grid


@dataclass
class RegPreviewEvent:
    """A registration run's current result on one scored target pair (model grid, 2D).

    fixed, moving, warped: (H, W) float32 normalised intensities; warped is the moving
    image warped by the network's current displacement, ``warp_image(moving, disp)``.
    """

    step: int                 # 0: the result before any update
    volume_index: int         # the pair's index among the previews (0: the one shown)
    fixed: np.ndarray
    moving: np.ndarray
    warped: np.ndarray


@dataclass
class CheckpointEvent:
    step: int
    path: str
    is_best: bool


@dataclass
class RollbackEvent:
    step: int
    to_step: int
    reason: str


@dataclass
class ResumedEvent:
    step: int                 # the checkpoint's step: the run continues after it
    checkpoint: str


@dataclass
class FinishedEvent:
    status: str               # "completed", "stopped early", "cancelled", "collapsed"
    steps_done: int
    best_step: int
    message: str


#: Any event the engine emits.
EngineEvent = (StepEvent | ScoreEvent | PreviewEvent | RegPreviewEvent | CheckpointEvent
               | RollbackEvent | ResumedEvent | FinishedEvent)
