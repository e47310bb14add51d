"""sfda, tent, adabn and early: a few steps on tiny data update exactly what they should."""

from __future__ import annotations

import pytest
import torch

from uda_core.methods.adabn import AdaBN, AdaBNConfig
from uda_core.methods.base import Batch
from uda_core.methods.early import EarlyConfig, EarlyFeatures
from uda_core.methods.registry import METHODS, missing_needs
from uda_core.methods.sfda import SFDA, SFDAConfig
from uda_core.methods.tent import Tent, TentConfig
from uda_core.models.bundle import load_model


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(4, 1, 32, 32, generator=g), torch.linspace(0, 1, 4))


def _run(method, steps=3):
    before = {k: v.detach().clone() for k, v in method.network.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in method.network.named_buffers()}
    method.setup()
    method.train_mode()
    losses = [method.step(_batch(i)) for i in range(steps)]
    changed = {k for k, v in method.network.named_parameters()
               if not torch.equal(v.detach(), before[k])}
    changed_buffers = {k for k, v in method.network.named_buffers()
                       if not torch.equal(v.detach(), buffers[k])}
    return losses, changed, changed_buffers


def _method(cls, config, bundle_path, prior=True):
    bundle = load_model(bundle_path)
    if prior:
        bundle.class_ratio_prior = {"constant": [0.7, 0.1, 0.1, 0.1],
                                    "positions": [0.25, 0.75],
                                    "per_position": [[0.8, 0.1, 0.05, 0.05],
                                                     [0.6, 0.1, 0.15, 0.15]]}
    return cls(bundle.build_network(), bundle, config, torch.device("cpu"))


def test_sfda_updates_all_parameters_with_finite_losses(tiny_bundle_path):
    losses, changed, _ = _run(_method(SFDA, SFDAConfig(lr=1e-3), tiny_bundle_path))
    assert all(set(row) == {"entropy", "kl_prior", "total"} for row in losses)
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in losses)
    method_params = {k for k, _ in _method(SFDA, SFDAConfig(), tiny_bundle_path)
                     .network.named_parameters() if not k.startswith("early_head")}
    assert method_params <= changed


def test_sfda_batchnorm_only_and_brain_ratio(tiny_bundle_path):
    method = _method(SFDA, SFDAConfig(lr=1e-3, params="batchnorm", kl_region="brain"),
                     tiny_bundle_path)
    bn_names = {f"{name}.{p}" for name, m in method.network.named_modules()
                if isinstance(m, torch.nn.BatchNorm2d) for p in ("weight", "bias")}
    losses, changed, _ = _run(method)
    assert changed and changed <= bn_names
    assert all(row["kl_prior"] >= 0 for row in losses)


def test_sfda_refuses_unknown_choices(tiny_bundle_path):
    with pytest.raises(ValueError, match="kl_region"):
        _method(SFDA, SFDAConfig(kl_region="head"), tiny_bundle_path).setup()


def test_tent_updates_only_batchnorm_affine_parameters(tiny_bundle_path):
    method = _method(Tent, TentConfig(), tiny_bundle_path)
    bn_names = {f"{name}.{p}" for name, m in method.network.named_modules()
                if isinstance(m, torch.nn.BatchNorm2d) for p in ("weight", "bias")}
    losses, changed, _ = _run(method)
    assert changed and changed <= bn_names
    assert losses[0]["entropy"] > 0


def test_adabn_uses_no_gradients_and_changes_only_bn_statistics(tiny_bundle_path):
    method = _method(AdaBN, AdaBNConfig(), tiny_bundle_path)
    losses, changed, changed_buffers = _run(method)
    assert changed == set()
    assert all(p.grad is None for p in method.network.parameters())
    assert changed_buffers and all("running" in k or "num_batches" in k
                                   for k in changed_buffers)


def test_early_updates_only_the_early_block(tiny_bundle_path):
    method = _method(EarlyFeatures, EarlyConfig(), tiny_bundle_path)
    losses, changed, _ = _run(method)
    assert changed and all(k.startswith("early_block.") for k in changed)
    assert losses[-1]["soft_ce"] > 0


def test_missing_needs_are_named_before_anything_runs(tiny_bundle_path):
    bundle = load_model(tiny_bundle_path)
    bundle.class_ratio_prior = None
    assert missing_needs(METHODS["sfda"], bundle, {"target"}) == [
        "a class-ratio prior (from the model bundle, or given by you)"]
    assert "labelled source" in missing_needs(METHODS["adaptsegnet"], bundle, {"target"})[0]
    assert "source-modality" in missing_needs(METHODS["ddm"], bundle, {"target"})[0]
    bundle.early_head_state_dict = None
    assert "early-feature head" in missing_needs(METHODS["early"], bundle, {"target"})[0]
    assert missing_needs(METHODS["tent"], bundle, {"target"}) == []


def test_catalogue_names_exactly_the_registered_methods():
    from uda_core.methods.catalogue import SUMMARIES
    assert list(SUMMARIES) == list(METHODS)
    assert all(METHODS[name].summary == text for name, text in SUMMARIES.items())
