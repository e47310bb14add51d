"""AdaptSegNet (output-space adversarial adaptation): one update at a time and one tiny run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import adaptation_data
from uda_core.engine import Engine, EngineConfig
from uda_core.engine.checkpoints import load_checkpoint
from uda_core.methods.adaptsegnet import AdaptSegNet, AdaptSegNetConfig
from uda_core.methods.base import INTERNALS, SOURCE_LABELLED, TARGET, Batch, config_from_dict
from uda_core.models.bundle import load_model
from uda_core.models.nets.discriminator import OutputSpaceDiscriminator
from uda_core.tasks.segmentation import SegmentationTask

CPU = torch.device("cpu")


def make_method(bundle_path, **settings) -> AdaptSegNet:
    bundle = load_model(bundle_path)
    settings.setdefault("disc_channels", 4)
    config = config_from_dict(AdaptSegNetConfig, settings)
    method = AdaptSegNet(bundle.build_network(), bundle, config, CPU)
    torch.manual_seed(0)
    method.setup()
    method.train_mode()
    return method


def make_batch(seed=0, b=4, size=32) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(target=torch.randn(b, 1, size, size, generator=g),
                 positions=torch.rand(b, generator=g),
                 source=torch.randn(b, 1, size, size, generator=g),
                 source_labels=torch.randint(0, 4, (b, size, size), generator=g))


def params(module) -> dict:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict, module) -> set:
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v)}


def test_declares_needs_and_defaults():
    assert AdaptSegNet.needs == (TARGET, SOURCE_LABELLED, INTERNALS)
    cfg = AdaptSegNetConfig()
    assert cfg.lambda_adv == 0.001 and cfg.gan == "bce"
    assert cfg.segmenter_optimiser == "adam" and cfg.segmenter_lr == 1e-4
    assert AdaptSegNetConfig(gan="lsgan").lambda_adv == 0.01
    sgd = AdaptSegNetConfig(segmenter_optimiser="sgd")
    assert (sgd.segmenter_lr, sgd.weight_decay) == (2.5e-4, 5e-4)
    with pytest.raises(ValueError, match="gan"):
        AdaptSegNetConfig(gan="wgan")
    with pytest.raises(ValueError, match="segmenter_optimiser"):
        AdaptSegNetConfig(segmenter_optimiser="rmsprop")


def test_discriminator_shapes():
    disc = OutputSpaceDiscriminator(4)  # the reference width, 64
    widths = [m.out_channels for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [64, 128, 256, 512, 1]
    tiny = OutputSpaceDiscriminator(4, base_channels=2)
    assert tiny(torch.rand(2, 4, 96, 112)).shape == (2, 1, 3, 3)
    assert tiny(torch.rand(2, 4, 32, 32)).shape == (2, 1, 1, 1)
    with pytest.raises(ValueError, match="32"):
        tiny(torch.rand(2, 4, 16, 16))


@pytest.mark.parametrize("settings", [{}, {"gan": "lsgan", "segmenter_optimiser": "sgd"}])
def test_steps_change_segmenter_and_discriminator(tiny_bundle_path, settings):
    method = make_method(tiny_bundle_path, **settings)
    net, disc = method.network, method.discriminator
    net_before, disc_before = params(net), params(disc)
    for seed in range(2):
        losses = method.step(make_batch(seed, b=2))
        assert set(losses) == {"seg", "adv", "disc", "total"}
        assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values())
        assert losses["total"] == pytest.approx(
            losses["seg"] + method.config.lambda_adv * losses["adv"], rel=1e-5)
    net_changed = changed(net_before, net)
    assert net_changed == {k for k in net_before if not k.startswith("early_head.")}
    assert changed(disc_before, disc) == set(disc_before)
    assert method.extra_modules() == {"discriminator": disc}


def test_phases_touch_only_their_own_parameters(tiny_bundle_path):
    method = make_method(tiny_bundle_path)
    net, disc = method.network, method.discriminator
    net_before, disc_before = params(net), params(disc)
    _, source_probs, target_probs = method.segmenter_update(make_batch())
    assert changed(net_before, net) and not changed(disc_before, disc)
    assert all(p.requires_grad for p in disc.parameters())  # unfrozen again
    assert source_probs.shape == target_probs.shape == (4, 4, 32, 32)
    assert not source_probs.requires_grad and not target_probs.requires_grad
    net_mid = params(net)
    disc_loss = method.discriminator_update(source_probs, target_probs)
    assert math.isfinite(disc_loss)
    assert not changed(net_mid, net) and changed(disc_before, disc) == set(disc_before)


def test_adversarial_term_reaches_the_segmenter(tiny_bundle_path):
    batch = make_batch()
    plain = make_method(tiny_bundle_path, lambda_adv=0.0)
    adversarial = make_method(tiny_bundle_path, lambda_adv=1.0)
    plain.segmenter_update(batch)
    adversarial.segmenter_update(batch)
    assert all(p.grad is None for p in adversarial.discriminator.parameters())
    assert changed(params(plain.network), adversarial.network)


def test_source_batches_leave_bn_statistics_alone(tiny_bundle_path):
    method = make_method(tiny_bundle_path)
    bn = method.network.early_block[1]
    batch = make_batch()
    start = {k: v.clone() for k, v in method.network.state_dict().items()}
    with torch.no_grad():
        method.network(batch.target)  # what one target forward does to the statistics
    expected = bn.running_mean.clone()
    assert not torch.allclose(expected, start["early_block.1.running_mean"])
    method.network.load_state_dict(start)
    method.segmenter_update(batch)
    assert torch.allclose(bn.running_mean, expected)


def test_poly_decay_and_rollback(tiny_bundle_path):
    method = make_method(tiny_bundle_path, total_steps=4)
    segmenter, disc = method.optimisers
    lrs = []
    for seed in range(4):
        method.step(make_batch(seed, b=2))
        lrs.append(segmenter.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-4)
    assert lrs[3] == pytest.approx(1e-4 * 0.25**0.9)
    assert disc.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.25**0.9)
    state = method.extra_state()
    assert state["steps_done"] == 4
    method.on_rollback()
    method.step(make_batch(9, b=2))  # past total_steps: stays at the last rate, halved
    assert segmenter.param_groups[0]["lr"] == pytest.approx(0.5e-4 * 0.25**0.9)
    method.load_extra_state(state)
    assert method.steps_done == 4 and segmenter.param_groups[0]["base_lr"] == 1e-4


def test_needs_source_batch(tiny_bundle_path):
    method = make_method(tiny_bundle_path)
    batch = make_batch()
    batch.source = batch.source_labels = None
    with pytest.raises(ValueError, match="source"):
        method.step(batch)


def test_runs_in_the_engine_and_resumes(tiny_bundle_path, tmp_path):
    rng = np.random.default_rng(0)
    data = adaptation_data(rng.standard_normal((6, 32, 32)).astype("f4"),
                           source_images=rng.standard_normal((5, 32, 32)).astype("f4"),
                           source_labels=rng.integers(0, 4, (5, 32, 32)))
    # a random net on noise may look "collapsed"; a rollback would undo the steps checked here
    config = EngineConfig(steps=3, batch_size=2, score_every=0, score_slices=4,
                          checkpoint_every=0, skip_empty_slices=False, collapse_guard=False)
    method = make_method(tiny_bundle_path, total_steps=4)
    result = Engine(method, SegmentationTask(method, data, config), config,
                    out_dir=tmp_path).run()
    assert result.steps_done == 3
    losses = [row for row in result.history if "loss/disc" in row]
    assert len(losses) == 3 and all(math.isfinite(row["loss/adv"]) for row in losses)
    # the checkpoint holds the discriminator and both optimisers; resuming continues the decay
    resumed = make_method(tiny_bundle_path, total_steps=4)
    config.steps = 4
    Engine(resumed, SegmentationTask(resumed, data, config), config,
           out_dir=tmp_path / "resumed").run(
        resume_from=tmp_path / "checkpoints" / "last.pt")
    last = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert last["step"] == 4 and "discriminator" in last["modules"]
    state = last["method_state"]
    assert state["steps_done"] == 4
    assert state["optimisers"][1]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 0.25**0.9)
