"""Choosing the checkpoint without labels: never by a score the method's loss optimises, and
the source weights kept unless the chosen score is confidently better."""

from __future__ import annotations

import math

import pytest
import torch

from tests.engine.test_engine import sfda_engine, tiny_data
from uda_core.engine import Engine, EngineConfig
from uda_core.methods.adabn import AdaBN, AdaBNConfig
from uda_core.models.bundle import load_model
from uda_core.scores.label_free import gain
from uda_core.tasks.segmentation import SegmentationTask


def test_gain_is_a_difference_or_a_relative_decrease_of_the_divergence():
    assert gain("consistency", 0.90, 0.93, True) == pytest.approx(0.03)
    assert gain("entropy", 0.20, 0.15, False) == pytest.approx(0.05)
    assert gain("prior_kl", 0.010, 0.004, False) == pytest.approx(0.6)
    assert gain("prior_kl", 0.010, 0.020, False) == pytest.approx(-1.0)
    assert gain("brain_prior_kl", 0.010, 0.004, False) == pytest.approx(0.6)
    assert math.isnan(gain("info_max", float("nan"), 0.5, True))


@pytest.mark.parametrize("score", ["entropy", "prior_kl", "brain_prior_kl", "info_max", "snd"])
def test_a_score_the_method_optimises_is_refused(tiny_bundle_path, score):
    with pytest.raises(ValueError, match=f"select_by {score} is optimised by sfda's own loss"):
        sfda_engine(tiny_bundle_path, select_by=score)


def test_auto_takes_the_first_independent_score(tiny_bundle_path):
    engine = sfda_engine(tiny_bundle_path, select_by="auto", steps=3)
    result = engine.run()
    assert result.selected_by == "consistency"   # prior_kl is a term of sfda's loss


def adabn_engine(bundle_path, **engine_kw):
    bundle = load_model(bundle_path)
    bundle.class_ratio_prior = {"constant": [0.6, 0.1, 0.15, 0.15]}
    method = AdaBN(bundle.build_network(), bundle, AdaBNConfig(), torch.device("cpu"))
    settings = dict(steps=4, batch_size=4, score_every=2, score_slices=4,
                    skip_empty_slices=False, collapse_guard=False)
    settings.update(engine_kw)
    config = EngineConfig(**settings)
    return Engine(method, SegmentationTask(method, tiny_data(), config), config)


def test_auto_takes_prior_kl_first_and_the_next_independent_score_otherwise(
        tiny_bundle_path, monkeypatch):
    assert adabn_engine(tiny_bundle_path).run().selected_by == "prior_kl"
    monkeypatch.setattr(AdaBN, "circular_scores", ("brain_prior_kl", "prior_kl"))  # as sfda
    assert adabn_engine(tiny_bundle_path).run().selected_by == "consistency"


def test_brain_prior_kl_is_scored_beside_prior_kl_and_sees_what_background_hides(
        tiny_bundle_path):
    """The brain's class ratios: a CSF deficit that the whole-slice ratio barely shows."""
    from uda_core.scores.label_free import brain_prior_divergence, prior_divergence
    prior = torch.tensor([0.90, 0.02, 0.04, 0.04])       # CSF 20 % of the brain
    probs = torch.zeros(1, 4, 10, 10)
    probs[0, 0, :, :] = 1.0                               # 90 pixels background
    probs[0, :, 0, :] = torch.tensor([0.0, 0.0, 1.0, 0.0])[:, None]   # 10 pixels GM, no CSF
    probs[0, :, 0, 5:] = torch.tensor([0.0, 0.0, 0.0, 1.0])[:, None]  # ... 5 of them WM
    assert brain_prior_divergence(probs, prior) > 5 * prior_divergence(probs, prior)
    engine = adabn_engine(tiny_bundle_path)
    scores, _, _ = engine.task.score()
    assert {"prior_kl", "brain_prior_kl"} <= set(scores)


def test_no_confident_step_keeps_the_source_weights_and_says_so(tiny_bundle_path):
    engine = adabn_engine(tiny_bundle_path, select_by="consistency", min_gain=10.0)
    before = {k: v.clone() for k, v in engine.network.state_dict().items()}
    result = engine.run()
    assert result.best_step == 0 and result.kept_source
    assert "kept the source weights (step 0)" in result.outcome
    for key, value in engine.network.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_a_confident_step_replaces_the_source(tiny_bundle_path):
    result = adabn_engine(tiny_bundle_path, select_by="last").run()
    assert result.best_step == 4 and not result.kept_source
    assert result.outcome.startswith("kept step 4")


def test_the_guard_score_vetoes_a_step_it_finds_worse(tiny_bundle_path):
    engine = adabn_engine(tiny_bundle_path, select_by="prior_kl", guard_tolerance=0.005)
    best = {"initial_scores": {"prior_kl": 0.010, "consistency": 0.95}}
    better = {"prior_kl": 0.008, "consistency": 0.948}
    assert engine._confident(better, best)                    # consistency -0.002: tolerated
    assert not engine._confident({**better, "consistency": 0.93}, best)   # -0.02: vetoed
    assert not engine._confident({**better, "prior_kl": 0.011}, best)     # no gain at all


def test_every_guard_score_must_hold(tiny_bundle_path):
    """The default guards both (consistency, brain_prior_kl): either one vetoes."""
    engine = adabn_engine(tiny_bundle_path, select_by="prior_kl", guard_tolerance=0.005)
    assert engine.config.guard_by == "consistency,brain_prior_kl"
    best = {"initial_scores": {"prior_kl": 0.010, "consistency": 0.95,
                               "brain_prior_kl": 0.020}}
    better = {"prior_kl": 0.008, "consistency": 0.95, "brain_prior_kl": 0.0200}
    assert engine._confident(better, best)
    # brain_prior_kl 0.020 -> 0.0202: a relative rise of 1 %, beyond the 0.5 % tolerated
    assert not engine._confident({**better, "brain_prior_kl": 0.0202}, best)
    assert engine._confident({**better, "brain_prior_kl": 0.02009}, best)   # 0.45 %
    assert not engine._confident({**better, "consistency": 0.94}, best)
    assert engine._guards("prior_kl", better) == ["consistency", "brain_prior_kl"]
    assert engine._guards("consistency", better) == ["brain_prior_kl"]
    engine._skipped_unconfident = 1    # a better scoring was vetoed: the outcome says by what
    assert ("no step beat it on prior_kl with consistency and brain_prior_kl no worse"
            in engine._outcome({"step": 0, "scores": better}, "prior_kl", True))


def test_no_guard_when_the_method_optimises_it(tiny_bundle_path):
    engine = sfda_engine(tiny_bundle_path, select_by="consistency", guard_by="prior_kl")
    best = {"initial_scores": {"prior_kl": 0.010, "consistency": 0.90}}
    assert engine._confident({"prior_kl": 0.5, "consistency": 0.91}, best)
