"""guided: selftrain on a guide model's pseudo-labels (default demo:brain-t1-robust)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_seg_bundle
from uda_core.methods.base import config_from_dict
from uda_core.methods.guide import guide_mismatch
from uda_core.methods.guided import DEFAULT_GUIDE, Guided, GuidedConfig
from uda_core.methods.pseudo_labels import view_averaged_probs
from uda_core.methods.registry import METHODS, missing_needs
from uda_core.models.bundle import load_model, save_bundle


def test_registered_with_the_robust_model_as_its_guide_and_its_labels_alone():
    assert METHODS["guided"] is Guided
    config = GuidedConfig()
    assert config.guide == DEFAULT_GUIDE == "demo:brain-t1-robust"
    assert config.guide_weight == 1.0
    assert not Guided.adapts_3d
    assert set(Guided.circular_scores) >= {"consistency", "entropy"}


def test_it_applies_to_the_demo_models_and_says_why_not_to_others(tiny_bundle_path):
    assert missing_needs(Guided, load_model("demo:brain-t1"), {"target"}) == []
    [why] = missing_needs(Guided, load_model(tiny_bundle_path), {"target"})
    assert why.startswith("a model that takes the input of its guide demo:brain-t1-robust")
    assert "in_plane_shape" in why
    assert guide_mismatch("demo:nope", load_model("demo:brain-t1")).startswith("demo:nope")


def test_with_weight_one_the_pseudo_labels_are_the_guides(tmp_path):
    student = save_bundle(make_seg_bundle(seed=1), tmp_path / "student.pt")
    guide = save_bundle(make_seg_bundle(seed=2), tmp_path / "guide.pt")
    bundle = load_model(student)
    method = Guided(bundle.build_network(), bundle,
                    config_from_dict(GuidedConfig, {"guide": str(guide), "confidence": 0.0,
                                                    "n_intensity_views": 0}),
                    torch.device("cpu"))
    method.setup()
    images = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    labels, _ = method.pseudo_labels(images)
    empty = torch.zeros(0, 2)
    expected = view_averaged_probs(method.guide, images, empty, empty, method.flip_dims)
    assert torch.equal(labels, expected.argmax(1))
    teacher = view_averaged_probs(method.teacher, images, empty, empty, method.flip_dims)
    assert not torch.equal(labels, teacher.argmax(1))   # the student's own view is not used


def test_without_a_guide_it_refuses_and_points_to_selftrain(tiny_bundle_path):
    bundle = load_model(tiny_bundle_path)
    method = Guided(bundle.build_network(), bundle, GuidedConfig(guide=None),
                    torch.device("cpu"))
    with pytest.raises(ValueError, match="guided needs a guide model"):
        method.setup()


def test_the_guide_is_checked_before_any_target_is_read(tiny_bundle_path, tmp_path):
    """check_settings (run before the targets are prepared) reads the guide and refuses one
    that does not take the model's input, or none at all."""
    from uda_core.errors import ModelError
    bundle = load_model(tiny_bundle_path)
    with pytest.raises(ModelError, match="brain-t1-robust.*cannot guide this model"):
        Guided.check_settings(GuidedConfig(), bundle)
    with pytest.raises(ValueError, match="guided needs a guide model"):
        Guided.check_settings(GuidedConfig(guide=None), bundle)
    with pytest.raises(ValueError, match="guide_weight"):
        Guided.check_settings(GuidedConfig(guide_weight=-0.1), bundle)
    fits = save_bundle(make_seg_bundle(seed=3), tmp_path / "fits.pt")
    Guided.check_settings(GuidedConfig(guide=str(fits)), bundle)   # no error


def test_a_standardised_model_still_takes_its_guide():
    """Quantile matching corrects the targets before either network reads them (the guide
    sees the same standardised slices), so it is no difference of input."""
    from uda_core.methods.guide import differing_input
    from uda_core.models.standardise import standardised
    bundle = load_model("demo:brain-t1")
    assert differing_input(load_model(DEFAULT_GUIDE), standardised(bundle)) == []
