"""Which method to use for what the user supplied (``uda adapt --method auto``, the app).

Torch-free. The choice was made on validation subjects 40-45 and is reported on the held-out
ones by the segmentation benchmark (BENCHMARKS.md, "Blending with the robust guide" and
"Adaptation on the demo shifts"): with a paired source-modality image of each subject, ddm is
the one method that recovers a change of contrast (T1w -> T2w). Without pairs, for a model
that takes the contrast-robust guide's input (the demo models' grid and classes), `blend`
with intensity standardisation first: on the validation T1w shifts it scored above blend
alone and above standardisation alone, with no harm on unshifted scans, and on a change of
contrast the blend hands over to the guide (the two networks disagree); every trained
source-free method (sfda, tent, selftrain, adabn, guided) was kept at step 0 by the
do-no-harm checkpoint rule on the benchmark. For any other model, intensity standardisation
alone (no training, cannot drift).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recommendation:
    method: str          # a name in uda_core.methods.registry.METHODS
    standardise: bool    # also standardise intensities first
    reason: str          # one line for people


def recommend(paired: bool, source_labelled: bool = False,
              guide_fits: bool = False) -> Recommendation:
    """The method for a run given paired source-modality images (`paired`), labelled source
    volumes (`source_labelled`) and a model that takes the default guide's input
    (`guide_fits`: blend can run); unlabelled targets are always there."""
    if paired:
        return Recommendation(
            "ddm", False,
            "paired source-modality images given: ddm matches the network's outputs on each "
            "pair and closed most of the T1w -> T2w gap in the benchmark")
    contrast = ("for a change of contrast (e.g. T2w scans) give each subject's T1w scan as "
                "--paired for ddm, or start from a contrast-robust model (demo:brain-t1-robust "
                "segmented T2w and PD heads without adaptation)")
    if guide_fits:
        reason = ("no paired images: blend mixes your network's answers with those of a "
                  "contrast-robust guide, demo:brain-t1-robust (no training; the guide alone "
                  "where the two "
                  "disagree, as on a change of contrast), on intensity-standardised scans "
                  "where standardising scores better; on validation T1w scanner shifts it "
                  "beat standardisation alone and did no harm on unshifted scans; with a "
                  "T1w scan of each subject, --paired and ddm do better on a change of "
                  "contrast")
        if source_labelled:
            reason += "; labelled source volumes add nothing here (adaptsegnet did not help)"
        return Recommendation("blend", True, reason)
    reason = ("no paired images: intensity standardisation (no training, cannot drift; "
              "applied only when the model scores better on the standardised scans) "
              "helped on T1w scanner shifts in the benchmark, where trained source-free "
              "methods did not; " + contrast)
    if source_labelled:
        reason += "; labelled source volumes add nothing here (adaptsegnet did not help)"
    return Recommendation("standardise", True, reason)
