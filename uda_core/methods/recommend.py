"""Which method to use for what the user supplied (``uda adapt --method auto``, the app).

Torch-free. The choice follows the segmentation benchmark (BENCHMARKS.md, "Adaptation on the
demo shifts"): with a paired source-modality image of each subject, ddm is the one method
that recovers a change of contrast (T1w -> T2w); without pairs, intensity standardisation is
the source-free step that helped on T1w scanner shifts and cannot drift, while every trained
source-free method (sfda, tent, selftrain, adabn) lowered Dice on validation subjects and was
kept at step 0 by the do-no-harm checkpoint rule. `guided` (self-training on a contrast-robust
guide's labels) raised Dice on validation subjects, but the label-free rule kept its source
weights on every benchmark shift, so it is not recommended (session 14).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recommendation:
    method: str          # a name in uda_core.methods.registry.METHODS
    standardise: bool    # also standardise intensities first
    reason: str          # one line for people


def recommend(paired: bool, source_labelled: bool = False) -> Recommendation:
    """The method for a run given paired source-modality images (`paired`) and labelled
    source volumes (`source_labelled`); unlabelled targets are always there."""
    if paired:
        return Recommendation(
            "ddm", False,
            "paired source-modality images given: ddm matches the network's outputs on each "
            "pair and closed most of the T1w -> T2w gap in the benchmark")
    reason = ("no paired images: intensity standardisation (no training, cannot drift; "
              "applied only when the model scores better on the standardised scans) "
              "helped on T1w scanner shifts in the benchmark, where trained source-free "
              "methods did not; for a change of contrast (e.g. T2w scans) give each "
              "subject's T1w scan as --paired for ddm, or start from a contrast-robust "
              "model (demo:brain-t1-robust segmented T2w and PD heads without adaptation)")
    if source_labelled:
        reason += "; labelled source volumes add nothing here (adaptsegnet did not help)"
    return Recommendation("standardise", True, reason)
