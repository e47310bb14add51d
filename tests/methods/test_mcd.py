"""MCD for registration: which parameters each step moves, every discrepancy, and the engine
driving it (events, cancel, checkpoints, resume)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from uda_core.engine import Engine, EngineConfig, RunControl
from uda_core.engine.checkpoints import load_checkpoint
from uda_core.engine.events import RegPreviewEvent, ScoreEvent, StepEvent
from uda_core.methods.mcd import MCDConfig, MCDRegistration
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.spatial.warp import warp_image
from uda_core.tasks.registration import RegistrationTask
from uda_core.tasks.registration_data import RegSlices, mono_modal

PAIR_ARGS = {"max_px": 2.0, "smooth_px": 4.0}


def tiny_slices(n=6, size=32, seed=0) -> RegSlices:
    """Smooth random 'T1' slices, a 'T2' with another contrast, and 3-class labels."""
    rng = np.random.default_rng(seed)
    fixed = np.stack([gaussian_filter(rng.standard_normal((size, size)), 2.0)
                      for _ in range(n)]).astype(np.float32)
    fixed /= fixed.std()
    labels = np.digitize(fixed, [-0.5, 0.5]).astype(np.int64) + 1
    return RegSlices(fixed=fixed, moving_source=(1.0 - fixed ** 2).astype(np.float32),
                     labels=labels, subjects=np.zeros(n, dtype=np.int64))


def tiny_net(seed=0) -> DiscreteRegNet:
    torch.manual_seed(seed)
    return DiscreteRegNet(radius_px=2.0, n_per_axis=5, stride=4, features=4, width=4,
                          smooth_sigma_px=1.0)


def make_method(discrepancy="pemd", seed=0, **config):
    net = tiny_net(seed)
    cfg = MCDConfig(discrepancy=discrepancy, source_batch=2, target_batch=2, num_k=2,
                    lr=1e-2, **config)
    method = MCDRegistration(net, None, cfg, torch.device("cpu"))
    method.setup()
    target = tiny_slices()
    task = RegistrationTask(net, target, mono_modal(target), torch.device("cpu"),
                            source_batch=2, target_batch=2, score_pairs=4, **PAIR_ARGS)
    return method, task


def _params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict, module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters())


def _snapshots(net):
    return _params(net.generator), _params(net.head1), _params(net.head2)


def test_step_a_changes_generator_and_both_heads():
    method, task = make_method()
    net = method.network
    g, h1, h2 = _snapshots(net)
    loss = method.step_a(task.sample_batch(np.random.default_rng(0)))
    assert math.isfinite(loss)
    assert _changed(g, net.generator) and _changed(h1, net.head1) and _changed(h2, net.head2)


def test_step_b_changes_only_the_heads():
    method, task = make_method()
    net = method.network
    g, h1, h2 = _snapshots(net)
    source, dis = method.step_b(task.sample_batch(np.random.default_rng(0)))
    assert math.isfinite(source) and math.isfinite(dis)
    assert not _changed(g, net.generator)
    assert _changed(h1, net.head1) and _changed(h2, net.head2)


def test_step_c_changes_only_the_generator():
    method, task = make_method()
    net = method.network
    g, h1, h2 = _snapshots(net)
    dis = method.step_c(task.sample_batch(np.random.default_rng(0)))
    assert math.isfinite(dis)
    assert _changed(g, net.generator)
    assert not _changed(h1, net.head1) and not _changed(h2, net.head2)
    assert all(p.requires_grad for p in net.parameters())  # heads trainable again


@pytest.mark.parametrize("discrepancy", ["l1", "swd", "pemd"])
def test_every_discrepancy_runs_with_finite_losses(discrepancy):
    method, task = make_method(discrepancy, n_projections=16)
    rng = np.random.default_rng(1)
    for _ in range(2):
        losses = method.step(task.sample_batch(rng))
        assert set(losses) == {"source_ce", "source_ce_b", "discrepancy_b", "discrepancy_c"}
        assert all(math.isfinite(v) for v in losses.values()), losses


def test_unknown_discrepancy_is_refused():
    with pytest.raises(ValueError, match="discrepancy"):
        make_method("kl")


def _engine(out_dir, listeners=(), control=None, discrepancy="swd"):
    method, task = make_method(discrepancy, n_projections=16)
    config = EngineConfig(steps=4, score_every=2, checkpoint_every=2, seed=0,
                          select_by="mutual_info")
    return Engine(method, task, config, out_dir, listeners, control)


def test_engine_runs_mcd_scores_it_and_writes_checkpoints(tmp_path):
    events = []
    result = _engine(tmp_path, [events.append]).run()
    assert result.status == "completed" and result.steps_done == 4
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2, 3, 4]
    scored = [e for e in events if isinstance(e, ScoreEvent)]
    assert [e.step for e in scored] == [0, 2, 4]
    assert set(scored[0].scores) == {"discrepancy", "entropy", "mutual_info"}
    assert set(scored[0].reference) == {"accuracy", "epe_mm"}
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 4
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_previews_show_the_current_warp_of_one_scored_pair(tmp_path):
    events = []
    method, task = make_method("swd", n_projections=16)
    i = int((task.scored.fixed_labels > 0).flatten(1).sum(1).argmax())
    method.inference_mode()
    with torch.no_grad():
        fixed, moving = task.scored.fixed[i:i + 1], task.scored.moving[i:i + 1]
        before = warp_image(moving, task.network(fixed, moving)["disp"])[0, 0].numpy()
    method.train_mode()
    config = EngineConfig(steps=4, score_every=2, preview_every=2, seed=0,
                          select_by="mutual_info")
    Engine(method, task, config, tmp_path, [events.append]).run()
    previews = [e for e in events if isinstance(e, RegPreviewEvent)]
    assert [e.step for e in previews] == [0, 2, 4]
    i = int((task.scored.fixed_labels > 0).flatten(1).sum(1).argmax())
    last = previews[-1]
    assert last.warped.shape == last.fixed.shape == (32, 32)
    np.testing.assert_array_equal(last.fixed, task.scored.fixed[i, 0].numpy())
    np.testing.assert_array_equal(last.moving, task.scored.moving[i, 0].numpy())
    # step 0 shows the untouched network's warp of that pair
    np.testing.assert_allclose(previews[0].warped, before, atol=1e-5)
    assert not np.allclose(previews[0].warped, previews[-1].warped)


def test_cancel_leaves_a_checkpoint_and_resume_gives_the_uninterrupted_result(tmp_path):
    straight = _engine(tmp_path / "a").run()

    control = RunControl()

    def cancel_at_three(event):
        if isinstance(event, StepEvent) and event.step == 3:
            control.cancel()

    cancelled = _engine(tmp_path / "b", [cancel_at_three], control).run()
    assert cancelled.status == "cancelled" and cancelled.steps_done == 3
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["step"] == 3
    resumed = _engine(tmp_path / "b").run(resume_from=last)
    assert resumed.steps_done == 4 and resumed.best_step == straight.best_step
    for key, value in straight.network_state.items():
        torch.testing.assert_close(resumed.network_state[key], value, msg=key)


def test_select_by_must_be_a_registration_score(tmp_path):
    method, task = make_method()
    with pytest.raises(ValueError, match="select_by"):
        Engine(method, task, EngineConfig(select_by="consistency"))


def test_each_discrepancy_has_its_own_default_learning_rate():
    from uda_core.methods.mcd import DEFAULT_LRS

    assert MCDConfig(discrepancy="swd").learning_rate == DEFAULT_LRS["swd"] == 5e-4
    assert MCDConfig(discrepancy="pemd").learning_rate == DEFAULT_LRS["pemd"] == 2e-3
    assert MCDConfig(discrepancy="swd", lr=1e-3).learning_rate == 1e-3
