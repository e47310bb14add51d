"""The recommended method for what the user supplied."""

from __future__ import annotations

from uda_core.methods.recommend import recommend
from uda_core.methods.registry import METHODS


def test_pairs_recommend_ddm():
    choice = recommend(paired=True)
    assert choice.method == "ddm" and not choice.standardise and "paired" in choice.reason


def test_no_pairs_recommend_standardisation():
    choice = recommend(paired=False)
    assert choice.method == "standardise" and choice.standardise
    assert "--paired" in choice.reason
    assert "adaptsegnet" in recommend(paired=False, source_labelled=True).reason


def test_no_pairs_and_a_model_that_takes_the_guide_recommend_blend_on_standardised_scans():
    choice = recommend(paired=False, guide_fits=True)
    assert choice.method == "blend" and choice.standardise
    assert "--paired" in choice.reason and "demo:brain-t1-robust" in choice.reason
    assert recommend(paired=True, guide_fits=True).method == "ddm"


def test_recommendations_are_registered_methods():
    for paired in (True, False):
        for fits in (True, False):
            assert recommend(paired, guide_fits=fits).method in METHODS
