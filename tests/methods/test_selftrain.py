"""selftrain: the mean teacher's average, the views, the denoising, the intensity changes, and
a few steps on a tiny bundle (what changes, checkpoints, resume, reproducibility)."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import nn

from uda_core.engine import Engine, EngineConfig, RunControl
from uda_core.engine.events import StepEvent
from uda_core.grid.prepare import ModelInput
from uda_core.methods import intensity_views as iv
from uda_core.methods.base import Batch, config_from_dict
from uda_core.methods.pseudo_labels import (
    balanced_class_weights,
    class_thresholds,
    denoised_labels,
    view_averaged_probs,
)
from uda_core.methods.registry import METHODS, missing_needs
from uda_core.methods.selftrain import SelfTrain, SelfTrainConfig, ema_update
from uda_core.models.bundle import load_model
from uda_core.tasks.segmentation import SegmentationTask
from uda_core.tasks.segmentation_data import AdaptationData

# --- the teacher's average -------------------------------------------------------------------


def _conv_bn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))


def test_ema_update_is_decay_times_teacher_plus_the_rest_times_student():
    teacher, student = _conv_bn(), _conv_bn()
    with torch.no_grad():  # dyadic values: the weighted sum is exact in float32
        for i, (t, s) in enumerate(zip(teacher.parameters(), student.parameters(),
                                       strict=True)):
            t.copy_(torch.arange(t.numel()).view_as(t) * 0.5 + i)
            s.copy_(torch.arange(s.numel()).view_as(s) * -0.25 - 2 * i)
        student[1].running_mean.copy_(torch.tensor([3.0, -1.0]))
        student[1].num_batches_tracked.fill_(7)
    before = [t.detach().clone() for t in teacher.parameters()]
    ema_update(teacher, student, 0.75)
    for t, b, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        assert torch.equal(t, 0.75 * b + 0.25 * s)
    assert torch.equal(teacher[1].running_mean, torch.tensor([3.0, -1.0]))
    assert int(teacher[1].num_batches_tracked) == 7


def test_ema_update_leaves_parameters_the_student_shares_unchanged():
    teacher, student = _conv_bn(), _conv_bn()
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        teacher[0].weight.mul_(1.0 / 3.0)  # values whose 0.99 / 0.01 mix would round
        student[0].weight.copy_(teacher[0].weight)
    before = teacher[0].weight.detach().clone()
    ema_update(teacher, student, 0.99)
    assert torch.equal(teacher[0].weight, before)


# --- the views -------------------------------------------------------------------------------


class PositionNet(nn.Module):
    """Two classes; class 1's logit is the intensity plus 0.3 x (row) + 0.1 y (column), so
    the output depends on both in-plane axes and on the intensity."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows, cols = images.shape[-2:]
        position = (0.3 * torch.arange(rows).view(-1, 1) + 0.1 * torch.arange(cols)).float()
        logit = images[:, 0] + position
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def test_flip_averaging_gives_the_left_right_symmetric_mean():
    images = torch.zeros(2, 1, 4, 3)
    probs = view_averaged_probs(PositionNet(), images, torch.ones(0, 2), torch.zeros(0, 2))
    position = 0.3 * torch.arange(4.0).view(-1, 1) + 0.1 * torch.arange(3.0)
    mirrored = 0.3 * torch.arange(3.0, -1.0, -1.0).view(-1, 1) + 0.1 * torch.arange(3.0)
    expected = 0.5 * (torch.sigmoid(position) + torch.sigmoid(mirrored))
    torch.testing.assert_close(probs[:, 1], expected.expand(2, 4, 3))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, 4, 3))
    assert torch.allclose(probs[:, 1], probs[:, 1].flip(-2))


def test_intensity_views_are_averaged_with_their_own_scale_and_shift():
    images = torch.linspace(-1, 1, 2 * 4 * 3).view(2, 1, 4, 3)
    scales = torch.tensor([[0.9, 1.1], [1.05, 0.95]])  # (V, B)
    shifts = torch.tensor([[0.1, -0.1], [0.0, 0.05]])
    probs = view_averaged_probs(PositionNet(), images, scales, shifts)
    x = images[:, 0]
    position = 0.3 * torch.arange(4.0).view(-1, 1) + 0.1 * torch.arange(3.0)
    flipped_position = position.flip(0)  # the flipped view's output, flipped back
    views = [x + position, x + flipped_position]
    views += [x * s.view(-1, 1, 1) + t.view(-1, 1, 1) + position
              for s, t in zip(scales, shifts, strict=True)]
    expected = torch.stack([torch.sigmoid(v) for v in views]).mean(dim=0)
    torch.testing.assert_close(probs[:, 1], expected)


# --- denoising -------------------------------------------------------------------------------


def _hand_made_probs() -> torch.Tensor:
    """(1, 3, 2, 4): each pixel's class and confidence, the rest split evenly."""
    pixels = [(0, 0.9), (0, 0.8), (0, 0.7), (0, 0.6), (1, 0.95), (1, 0.65), (1, 0.52),
              (2, 0.5)]
    probs = torch.zeros(3, 8)
    for i, (c, conf) in enumerate(pixels):
        probs[:, i] = (1 - conf) / 2
        probs[c, i] = conf
    return probs.view(1, 3, 2, 4)


def test_class_thresholds_are_each_class_quantile_and_zero_when_absent():
    confidence, labels = _hand_made_probs().max(dim=1)
    thresholds = class_thresholds(confidence, labels, 4, 0.5)
    torch.testing.assert_close(thresholds, torch.tensor([0.75, 0.65, 0.5, 0.0]))


def test_denoising_keeps_pixels_above_the_global_and_their_class_threshold():
    labels, keep = denoised_labels(_hand_made_probs(), 0.55, 0.5)
    assert labels.flatten().tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    # class 0 median 0.75, class 1 median 0.65; class 2 passes its own (0.5) but not 0.55
    assert keep.flatten().tolist() == [True, True, False, False, True, True, False, False]
    _, keep_all = denoised_labels(_hand_made_probs(), 0.0, 0.0)
    assert bool(keep_all.all())


def test_balanced_class_weights_are_inverse_shares_clipped():
    labels = torch.tensor([0, 0, 1, 2])  # shares 1/2, 1/4, 1/4 of the 3 present classes
    torch.testing.assert_close(balanced_class_weights(labels, 4, 5.0),
                               torch.tensor([2 / 3, 4 / 3, 4 / 3, 1.0]))
    skewed = torch.tensor([0] * 9 + [1])  # raw weights 1/1.8 and 5: the larger one clipped
    torch.testing.assert_close(balanced_class_weights(skewed, 2, 2.0),
                               torch.tensor([1 / 1.8, 2.0]))
    skewed = torch.tensor([0] * 49 + [1])  # raw weights 1/1.96 and 25: both clipped
    torch.testing.assert_close(balanced_class_weights(skewed, 2, 1.5),
                               torch.tensor([1 / 1.5, 1.5]))


# --- intensity changes -----------------------------------------------------------------------


def test_scale_shift_gamma_and_contrast_by_hand():
    images = torch.tensor([[-1.0, 0.0, 1.0], [2.0, 4.0, 6.0]]).view(2, 1, 1, 3)
    torch.testing.assert_close(iv.scale_shift(images, torch.tensor([2.0, 0.5]),
                                              torch.tensor([1.0, 0.0]))[:, 0, 0],
                               torch.tensor([[-1.0, 1.0, 3.0], [1.0, 2.0, 3.0]]))
    torch.testing.assert_close(iv.gamma(images, torch.tensor([2.0, 1.0]))[:, 0, 0],
                               torch.tensor([[-1.0, -0.5, 1.0], [2.0, 4.0, 6.0]]))
    torch.testing.assert_close(iv.contrast(images, torch.tensor([2.0, 0.5]))[:, 0, 0],
                               torch.tensor([[-2.0, 0.0, 2.0], [3.0, 4.0, 5.0]]))
    constant = torch.full((1, 1, 2, 2), 3.0)
    assert torch.equal(iv.gamma(constant, torch.tensor([0.7])), constant)


def test_blur_has_its_own_sigma_per_slice():
    images = torch.zeros(2, 1, 7, 7)
    images[:, 0, 3, 3] = 1.0
    blurred = iv.gaussian_blur(images, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(blurred[0], images[0])
    weights = torch.exp(-0.5 * torch.arange(-2.0, 3.0) ** 2)
    weights = weights / weights.sum()
    expected = torch.zeros(7, 7)
    expected[1:6, 1:6] = weights.view(-1, 1) * weights
    torch.testing.assert_close(blurred[1, 0], expected)
    constant = torch.full((1, 1, 5, 6), 2.0)
    torch.testing.assert_close(iv.gaussian_blur(constant, torch.tensor([1.0])), constant)


def test_noise_and_strong_view_follow_the_generator():
    images = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(iv.add_noise(images, torch.zeros(3), g), images)
    noisy = iv.add_noise(images, torch.tensor([0.0, 0.1, 0.2]), g)
    assert torch.equal(noisy[0], images[0]) and not torch.equal(noisy[2], images[2])
    first = iv.strong_view(images, torch.Generator().manual_seed(1), blur_prob=0.5)
    again = iv.strong_view(images, torch.Generator().manual_seed(1), blur_prob=0.5)
    other = iv.strong_view(images, torch.Generator().manual_seed(2), blur_prob=0.5)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, again) and not torch.equal(first, other)
    plain = iv.strong_view(images, torch.Generator().manual_seed(1), max_gamma=1.0,
                           contrast_range=0.0, noise_std=0.0, blur_prob=0.0)
    torch.testing.assert_close(plain, images)


def test_scale_shift_amounts_are_in_range_and_seeded():
    scales, shifts = iv.random_scale_shift_amounts(3, 4, 0.1, 0.2,
                                                   torch.Generator().manual_seed(0))
    assert scales.shape == shifts.shape == (3, 4)
    assert bool(((scales >= 0.9) & (scales <= 1.1)).all())
    assert bool((shifts.abs() <= 0.2).all()) and shifts.std() > 0


# --- the method on a tiny bundle -------------------------------------------------------------


def _batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(100 + seed)
    return Batch(torch.randn(2, 1, 16, 16, generator=g), torch.tensor([0.3, 0.7]))


def _method(bundle_path: str, **settings) -> SelfTrain:
    # a random network is unsure everywhere: keep pixels on the class quantile alone
    values = {"confidence": 0.0, "class_quantile": 0.5, "lr": 1e-3, **settings}
    bundle = load_model(bundle_path)
    method = SelfTrain(bundle.build_network(), bundle,
                       config_from_dict(SelfTrainConfig, values), torch.device("cpu"))
    method.setup()
    method.train_mode()
    return method


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a))


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_registered_with_its_needs_and_circular_scores(tiny_bundle_path):
    assert METHODS["selftrain"] is SelfTrain
    assert missing_needs(SelfTrain, load_model(tiny_bundle_path), {"target"}) == []
    assert set(SelfTrain.circular_scores) == {"entropy", "info_max", "snd", "consistency"}
    assert SelfTrain.default_steps == 100


def test_steps_change_the_student_and_the_teacher_less(tiny_bundle_path):
    method = _method(tiny_bundle_path)
    source = _params(method.network)
    losses = [method.step(_batch(i)) for i in range(3)]
    assert all(set(row) == {"ce", "kept", "pseudo_foreground"} for row in losses)
    assert all(row["ce"] > 0 and 0.3 < row["kept"] <= 0.6 for row in losses)  # ~half kept
    student_moved = _distance(_params(method.network), source)
    teacher_moved = _distance(_params(method.teacher), source)
    assert 0 < teacher_moved < 0.2 * student_moved
    assert all(not p.requires_grad for p in method.teacher.parameters())
    assert not method.teacher.training
    assert method.network.training == method.config.batch_statistics
    for (name, t), s in zip(method.teacher.named_buffers(), method.network.buffers(),
                            strict=True):
        assert torch.equal(t, s), name  # BatchNorm statistics copied from the student


def test_batchnorm_params_train_only_batchnorm_scales_and_shifts(tiny_bundle_path):
    method = _method(tiny_bundle_path, params="batchnorm")
    bn_names = {f"{name}.{p}" for name, m in method.network.named_modules()
                if isinstance(m, nn.BatchNorm2d) for p in ("weight", "bias")}
    source = _params(method.network)
    method.step(_batch(0))
    changed = {k for k, v in _params(method.network).items() if not torch.equal(v, source[k])}
    assert changed and changed <= bn_names
    teacher_changed = {k for k, v in _params(method.teacher).items()
                       if not torch.equal(v, source[k])}
    assert teacher_changed == changed


def test_without_batch_statistics_the_source_statistics_stay(tiny_bundle_path):
    method = _method(tiny_bundle_path, batch_statistics=False)
    buffers = {k: v.clone() for k, v in method.network.named_buffers()}
    source = _params(method.network)
    method.step(_batch(0))
    assert not method.network.training
    assert all(torch.equal(v, buffers[k]) for k, v in method.network.named_buffers())
    assert all(torch.equal(v, buffers[k]) for k, v in method.teacher.named_buffers())
    assert any(not torch.equal(v, source[k]) for k, v in _params(method.network).items())


def test_nothing_kept_means_no_update(tiny_bundle_path):
    method = _method(tiny_bundle_path, confidence=1.0)
    source = _params(method.network)
    assert method.step(_batch(0))["kept"] == 0.0
    assert all(torch.equal(v, source[k]) for k, v in _params(method.network).items())


def _round_trip(value):
    """Through torch.save and torch.load, as a checkpoint file."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_checkpoint_round_trip_restores_teacher_and_draws(tiny_bundle_path):
    method = _method(tiny_bundle_path)
    method.step(_batch(0))
    saved = _round_trip({"network": method.network.state_dict(),
                         "modules": {k: m.state_dict()
                                     for k, m in method.extra_modules().items()},
                         "state": method.extra_state()})
    teacher_then = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    first = method.step(_batch(1))
    after_first = _params(method.teacher)
    method.step(_batch(2))
    method.network.load_state_dict(saved["network"])
    for name, module in method.extra_modules().items():
        module.load_state_dict(saved["modules"][name])
    method.load_extra_state(saved["state"])
    for k, v in method.teacher.state_dict().items():
        assert torch.equal(v, teacher_then[k]), k
    assert method.step(_batch(1)) == first  # same Adam state, same views and changes
    assert all(torch.equal(v, after_first[k]) for k, v in _params(method.teacher).items())


def test_finish_exports_the_teacher_unless_told_not_to(tiny_bundle_path):
    for use_teacher in (True, False):
        method = _method(tiny_bundle_path, use_teacher_at_end=use_teacher)
        method.step(_batch(0))
        student = _params(method.network)
        method.finish()
        expected = _params(method.teacher) if use_teacher else student
        assert all(torch.equal(v, expected[k]) for k, v in _params(method.network).items())
    assert not torch.equal(student["final.weight"], _params(method.teacher)["final.weight"])


def test_same_seed_same_weights_other_seed_other_weights(tiny_bundle_path):
    def run(seed: int, global_seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(global_seed)  # the method must not draw from torch's global RNG
        method = _method(tiny_bundle_path, seed=seed)
        for i in range(2):
            method.step(_batch(i))
        return {**_params(method.network), **{f"teacher.{k}": v for k, v
                                               in _params(method.teacher).items()}}

    first, second, other = run(0, 1), run(0, 2), run(1, 1)
    assert all(torch.equal(v, second[k]) for k, v in first.items())
    assert any(not torch.equal(v, other[k]) for k, v in first.items())


def _engine(bundle_path: str, out_dir, control=None, listeners=()) -> Engine:
    bundle = load_model(bundle_path)
    method = SelfTrain(bundle.build_network(), bundle,
                       SelfTrainConfig(confidence=0.0, class_quantile=0.5, lr=1e-3),
                       torch.device("cpu"))
    config = EngineConfig(steps=4, batch_size=2, score_every=2, score_slices=2,
                          checkpoint_every=2, skip_empty_slices=False, collapse_guard=False,
                          select_by="last")
    slices = np.random.default_rng(0).normal(0, 1, (6, 32, 32)).astype(np.float32)
    data = AdaptationData(volumes=[None], inputs=[
        ModelInput(slices, np.eye(4), (32, 32, 6), np.linspace(0, 1, 6).astype(np.float32))])
    return Engine(method, SegmentationTask(method, data, config), config, out_dir, listeners,
                  control)


def test_resumed_run_gives_the_uninterrupted_weights(tiny_bundle_path, tmp_path):
    straight = _engine(tiny_bundle_path, tmp_path / "a").run()
    control = RunControl()

    def cancel_at_two(event):
        if isinstance(event, StepEvent) and event.step == 2:
            control.cancel()

    _engine(tiny_bundle_path, tmp_path / "b", control, [cancel_at_two]).run()
    resumed = _engine(tiny_bundle_path, tmp_path / "b").run(
        resume_from=tmp_path / "b" / "checkpoints" / "last.pt")
    assert resumed.steps_done == 4 and straight.network_state is not None
    assert resumed.network_state is not None
    for key, value in straight.network_state.items():
        assert torch.equal(resumed.network_state[key], value), key


# --- a guide model ---------------------------------------------------------------------------


def test_a_guide_blends_its_view_average_into_the_pseudo_labels(tiny_bundle_path, tmp_path):
    from tests.conftest import make_seg_bundle
    from uda_core.models.bundle import save_bundle
    guide_path = str(save_bundle(make_seg_bundle(seed=5), tmp_path / "guide.pt"))
    method = _method(tiny_bundle_path, guide=guide_path, guide_weight=0.25,
                     n_intensity_views=0)
    assert all(not p.requires_grad for p in method.guide.parameters())
    assert "guide" not in method.extra_modules()       # read from its file, never trained
    images = _batch(0).target
    expected = torch.lerp(view_averaged_probs(method.teacher, images, torch.zeros(0, 2),
                                              torch.zeros(0, 2), method.flip_dims),
                          view_averaged_probs(method.guide, images, torch.zeros(0, 2),
                                              torch.zeros(0, 2), method.flip_dims), 0.25)
    labels, keep = method.pseudo_labels(images)
    want_labels, want_keep = denoised_labels(expected, 0.0, 0.5)
    assert torch.equal(labels, want_labels) and torch.equal(keep, want_keep)
    # weight 1: the guide's labels alone, whatever the teacher says
    only = _method(tiny_bundle_path, guide=guide_path, guide_weight=1.0, n_intensity_views=0)
    labels, _ = only.pseudo_labels(images)
    guide_probs = view_averaged_probs(only.guide, images, torch.zeros(0, 2),
                                      torch.zeros(0, 2), only.flip_dims)
    assert torch.equal(labels, guide_probs.argmax(1))


def test_a_guide_of_another_grid_or_classes_is_refused_by_name(tiny_bundle_path, tmp_path):
    import pytest

    from tests.conftest import make_seg_bundle
    from uda_core.errors import ModelError
    from uda_core.models.bundle import save_bundle
    other = str(save_bundle(make_seg_bundle(in_plane_shape=[48, 48]), tmp_path / "wide.pt"))
    with pytest.raises(ModelError, match=r"wide\.pt.*in_plane_shape differ"):
        _method(tiny_bundle_path, guide=other)
    with pytest.raises(ModelError, match="not found"):
        _method(tiny_bundle_path, guide=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="guide_weight"):
        _method(tiny_bundle_path, guide_weight=1.5)
