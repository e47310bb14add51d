"""How a run is driven: the engine's settings (method settings live in each method's config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from uda_core.scores import label_free

FALLBACK_SELECTION = "info_max"
SELECTION_SCORES = ("auto", *label_free.HIGHER_IS_BETTER, "last")  # segmentation's choices
#: What select_by "auto" takes: the first of these the task offers and the method's loss does
#: not optimise (methods.base.AdaptationMethod.circular_scores); see BENCHMARKS.md for the
#: validation studies behind the order (re-examined 2026-12-03: brain_prior_kl first was
#: safer for AdaBN and Tent but would have kept ddm's step 50 of a run still rising at 150).
AUTO_SELECTION = ("prior_kl", "consistency", "info_max", "mutual_info")


@dataclass
class EngineConfig:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"select_by": SELECTION_SCORES}

    """How a run is driven (method settings live in the method's own config)."""

    steps: int = 300                 # updates in the run
    batch_size: int = 16             # target slices per update
    seed: int = 0                    # random seed of batch sampling and initialisation
    skip_empty_slices: bool = True   # sample only slices that show the head
    score_every: int = 50            # label-free scoring interval (steps); 0 = only at the end
    score_slices: int = 32           # fixed target slices scored each time
    checkpoint_every: int = 50       # write last.pt every N steps (needs an output folder)
    preview_every: int = 0           # PreviewEvent every N steps (and of every target at step
                                     # 0); 0 = off. Which target: RunControl.preview_index
    select_by: str = "auto"          # label-free score that chooses the checkpoint: "auto" =
                                     # the first of AUTO_SELECTION that the method's loss does
                                     # not optimise (a score a method optimises rises while it
                                     # fails); such a circular choice given by name is refused
    min_gain: float = 0.0            # "first, do no harm": a step replaces step 0 (the source
                                     # weights) only when the selection score improves on step
                                     # 0's by more than this (label_free.gain units); else the
                                     # run keeps the source weights and says so
    guard_by: str = "consistency,brain_prior_kl"
                                     # ... and only when none of these independent scores
                                     # (comma-separated) is worse than at step 0 by more than
                                     # guard_tolerance (each skipped when the method's loss
                                     # optimises it or it is the selection score; "" = no
                                     # guard). On 22 validation runs this pair let no losing
                                     # step through (BENCHMARKS, checkpoint study)
    guard_tolerance: float = 0.005   # label_free.gain units
    patience: int = 0                # stop after this many scorings without improvement; 0 = off
    collapse_guard: bool = True      # roll back when a class vanishes or the output is constant
    max_rollbacks: int = 3           # stop the run after this many collapses
    amp: bool = True                 # bfloat16 autocast on CUDA

    @property
    def guard_names(self) -> list[str]:
        """guard_by as a list of score names (empty for "")."""
        return [g.strip() for g in self.guard_by.split(",") if g.strip()]

    def __post_init__(self) -> None:
        at_least = {"steps": 1, "batch_size": 1, "score_slices": 1, "score_every": 0,
                    "checkpoint_every": 0, "preview_every": 0, "patience": 0,
                    "max_rollbacks": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if isinstance(value, int) and value < low:
                raise ValueError(f"{name} must be >= {low}, not {value}")
