"""blend: the user's network mixed with a guide's probabilities, no training."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import blob_volume, make_seg_bundle, write_nifti
from uda_core.errors import ModelError
from uda_core.methods.blend import Blend, BlendConfig
from uda_core.methods.registry import METHODS, missing_needs
from uda_core.models.bundle import load_model, save_bundle
from uda_core.models.nets.blend import BlendNet


def test_registered_source_free_with_its_default_weight_and_no_label_free_choice():
    assert METHODS["blend"] is Blend
    assert BlendConfig().guide == "demo:brain-t1-robust" and BlendConfig().guide_weight == 0.5
    assert BlendConfig().agreement_floor == 0.6 and BlendConfig().lost_guide_weight == 1.0
    assert Blend.default_steps == 4 and Blend.default_select_by == "last"
    assert missing_needs(Blend, load_model("demo:brain-t1"), {"target"}) == []


def test_settings_and_the_guide_are_checked_before_any_target_is_read(tiny_bundle_path,
                                                                     tmp_path):
    bundle = load_model(tiny_bundle_path)
    with pytest.raises(ModelError, match="cannot guide this model"):
        Blend.check_settings(BlendConfig(), bundle)        # the demo guide's grid differs
    guide = str(save_bundle(make_seg_bundle(seed=5), tmp_path / "guide.pt"))
    for weight in (0.0, 1.5):
        with pytest.raises(ValueError, match="guide_weight"):
            Blend.check_settings(BlendConfig(guide=guide, guide_weight=weight), bundle)
        with pytest.raises(ValueError, match="lost_guide_weight"):
            Blend.check_settings(BlendConfig(guide=guide, lost_guide_weight=weight), bundle)
    with pytest.raises(ValueError, match="agreement_floor"):
        Blend.check_settings(BlendConfig(guide=guide, agreement_floor=1.2), bundle)
    Blend.check_settings(BlendConfig(guide=guide), bundle)   # no error


def test_a_run_scores_the_network_alone_then_the_blend_and_exports_the_blend(
        tmp_path, tiny_bundle_path, monkeypatch):
    from uda_core.runs.adapt import run_adaptation
    # the menus' check is against the demo guide; this run names a guide that fits
    monkeypatch.setattr("uda_core.methods.blend.guide_mismatch", lambda *_: "")
    guide = str(save_bundle(make_seg_bundle(seed=5), tmp_path / "guide.pt"))
    targets = [write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume((20, 24, 10), seed=i))
               for i in range(2)]
    summary = run_adaptation(tiny_bundle_path, "blend", targets, tmp_path / "run",
                             device="cpu", method_settings={"guide": guide,
                                                            "guide_weight": 0.3,
                                                            "agreement_floor": 0.0})
    assert summary["status"] == "completed" and summary["chosen_step"] == 4
    assert summary["selected_by"] == "last"
    assert "no label-free score judges blend" in summary["outcome"]
    adapted = load_model(summary["adapted_model"])
    assert adapted.architecture == "blend"
    net = adapted.build_network()
    assert isinstance(net, BlendNet) and float(net.weight) == pytest.approx(0.3)
    source, helper = load_model(tiny_bundle_path).build_network(), load_model(guide)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = (0.7 * torch.softmax(source(x), 1)
                    + 0.3 * torch.softmax(helper.build_network()(x), 1))
        torch.testing.assert_close(torch.softmax(net(x), 1), expected)


def test_agreement_is_the_pooled_dice_of_the_two_label_maps():
    from uda_core.methods.blend import class_overlap, pooled_agreement
    a = torch.tensor([[[1, 1, 2, 0]]])
    b = torch.tensor([[[1, 2, 2, 2]]])
    overlap, sizes = class_overlap(a, b, 4)
    assert overlap.tolist() == [2.0, 2.0, 0.0] and sizes.tolist() == [3.0, 4.0, 0.0]
    # class 1: 2/3, class 2: 2/4, class 3 in neither map: 1
    assert pooled_agreement(overlap, sizes) == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_networks_that_disagree_give_the_guide_its_lost_share(tiny_bundle_path, tmp_path):
    from tests.conftest import make_seg_bundle as make
    from uda_core.methods.base import Batch
    bundle = load_model(tiny_bundle_path)
    guide = save_bundle(make(seed=7), tmp_path / "guide.pt")
    config = BlendConfig(guide=str(guide), agreement_floor=1.0, lost_guide_weight=0.9)
    network = Blend.wrap_network(bundle.build_network(), bundle, config, torch.device("cpu"))
    method = Blend(network, bundle, config, torch.device("cpu"))
    method.setup()
    images = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    terms = method.step(Batch(target=images, positions=torch.zeros(4)))
    assert terms["agreement"] < 1.0 and terms["guide_share"] == pytest.approx(0.9)
    method.config = BlendConfig(guide=str(guide), agreement_floor=0.0, guide_weight=0.4)
    assert method.step(Batch(target=images, positions=torch.zeros(4)))["guide_share"] \
        == pytest.approx(0.4)
