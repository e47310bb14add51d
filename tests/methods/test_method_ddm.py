"""Direct distribution matching ("ddm"): single updates, its anchors, and one tiny run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import adaptation_data
from uda_core.engine import Engine, EngineConfig
from uda_core.methods.base import INTERNALS, PAIRED_SOURCE, TARGET, Batch, config_from_dict
from uda_core.methods.ddm import DDM, DDMConfig
from uda_core.models.bundle import load_model
from uda_core.tasks.segmentation import SegmentationTask

CPU = torch.device("cpu")


def make_method(bundle_path, **settings) -> DDM:
    bundle = load_model(bundle_path)
    method = DDM(bundle.build_network(), bundle, config_from_dict(DDMConfig, settings), CPU)
    torch.manual_seed(0)
    method.setup()
    method.train_mode()
    return method


def make_batch(seed=0, b=4, size=32, labelled=False, same=False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(b, 1, size, size, generator=g)
    paired = target.clone() if same else -0.8 * target + 0.3 * torch.randn(
        b, 1, size, size, generator=g)
    batch = Batch(target=target, positions=torch.rand(b, generator=g), paired_source=paired)
    if labelled:
        batch.source = torch.randn(b, 1, size, size, generator=g)
        batch.source_labels = torch.randint(0, 4, (b, size, size), generator=g)
    return batch


def state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module) -> set:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_declares_needs_and_checks_settings():
    assert DDM.name == "ddm"
    assert DDM.needs == (TARGET, PAIRED_SOURCE, INTERNALS)
    cfg = DDMConfig()
    assert (cfg.divergence, cfg.anchor, cfg.lr, cfg.anchor_weight) == ("kl", "auto", 1e-3, 1.0)
    assert cfg.lambda_match > 0 and not cfg.detach_source_branch
    for bad in ({"divergence": "brier"}, {"anchor": "none"}, {"lambda_match": -1.0},
                {"lr": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DDMConfig(**bad)


@pytest.mark.parametrize("divergence", ["kl", "hellinger", "bhattacharyya"])
def test_steps_train_the_network_and_never_the_teacher(tiny_bundle_path, divergence):
    method = make_method(tiny_bundle_path, divergence=divergence, lr=1e-2)
    net, teacher = method.network, method.teacher
    assert teacher is not None and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    net_before, teacher_before = state(net), state(teacher)
    for seed in range(3):
        losses = method.step(make_batch(seed))
        assert set(losses) == {"anchor", "match", "total"}
        assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values())
        assert losses["match"] > 0 and losses["anchor"] >= 0
        assert losses["total"] == pytest.approx(losses["anchor"] + losses["match"], rel=1e-5)
    assert changed(teacher_before, teacher) == set()
    moved = changed(net_before, net)
    weights = {k for k, _ in net.named_parameters()}
    head = {k for k in weights if k.startswith("early_head.")}
    assert head and moved & weights == weights - head  # all but the early head
    # Running statistics come from target batches only (the default).
    assert any(k.endswith("running_mean") for k in moved)


def test_identical_pairs_match_exactly(tiny_bundle_path):
    method = make_method(tiny_bundle_path)
    for divergence in ("kl", "hellinger", "bhattacharyya"):
        method.config.divergence = divergence
        losses = method.step(make_batch(1, same=True))
        assert abs(losses["match"]) < 1e-5, (divergence, losses)


def test_source_branch_does_not_touch_bn_running_stats(tiny_bundle_path):
    method = make_method(tiny_bundle_path)
    net = method.network
    batch = make_batch(2)
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net(batch.target)  # what the target forward alone does to the statistics
    expected = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    net.load_state_dict({**net.state_dict(), **stats})
    method.step(batch)
    after = {k: v for k, v in net.state_dict().items() if "running" in k}
    for key, value in after.items():
        torch.testing.assert_close(value, expected[key])


@pytest.mark.parametrize("detach", [False, True])
def test_detach_source_branch_stops_the_match_gradient(tiny_bundle_path, detach):
    # anchor_weight 0: only the match term sends gradients, so x1 gets one only when the
    # source branch is not detached.
    method = make_method(tiny_bundle_path, detach_source_branch=detach, anchor_weight=0.0)
    batch = make_batch(3)
    batch.paired_source.requires_grad_(True)
    batch.target.requires_grad_(True)
    method.step(batch)
    source_grad = batch.paired_source.grad
    assert batch.target.grad is not None and batch.target.grad.abs().sum() > 0
    reached = source_grad is not None and bool(source_grad.abs().sum() > 0)
    assert reached is not detach


def test_label_anchor_uses_the_labelled_slices(tiny_bundle_path):
    auto = make_method(tiny_bundle_path)
    labelled = make_batch(4, labelled=True)
    losses = auto.step(labelled)
    # A 4-class network near initialisation: cross-entropy about log(4), far from the ~0
    # KL to a teacher that starts from the same weights.
    assert losses["anchor"] > 0.5
    plain = make_method(tiny_bundle_path).step(make_batch(4))
    assert plain["anchor"] < 0.5
    strict = make_method(tiny_bundle_path, anchor="labels")
    assert strict.teacher is None
    with pytest.raises(ValueError, match="labelled source"):
        strict.step(make_batch(4))
    with pytest.raises(ValueError, match="paired"):
        strict.step(Batch(target=labelled.target, positions=labelled.positions))


def test_runs_in_the_engine(tiny_bundle_path):
    bundle = load_model(tiny_bundle_path)
    method = DDM(bundle.build_network(), bundle, DDMConfig(), CPU)
    rng = np.random.default_rng(0)
    slices = rng.normal(size=(6, 32, 32)).astype("f4")
    data = adaptation_data(
        slices, paired=[(-slices + 0.1 * rng.normal(size=slices.shape)).astype("f4")])
    config = EngineConfig(steps=3, batch_size=2, score_every=0, score_slices=4,
                          checkpoint_every=0, skip_empty_slices=False)
    result = Engine(method, SegmentationTask(method, data, config), config).run()
    assert result.status == "completed" and result.steps_done == 3
    steps = [row for row in result.history if "loss/match" in row]
    assert len(steps) == 3
    assert all(math.isfinite(row[f"loss/{k}"]) for row in steps
               for k in ("anchor", "match", "total"))
    # The teacher still holds the pretrained weights.
    pretrained = bundle.build_network().state_dict()
    assert changed(pretrained, method.teacher) == set()
