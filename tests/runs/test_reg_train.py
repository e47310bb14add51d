"""Source training of the registration net: pairs, loss, scores, loop, bundle (tiny, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uda_core.errors import ModelError
from uda_core.io import Volume
from uda_core.methods.registration_source import source_supervised_loss
from uda_core.models.bundle import describe, load_model, save_bundle
from uda_core.models.bundle.registration import (
    displacement_label_names,
    load_registration_model,
    make_registration_bundle,
)
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.runs.train_registration import (
    RegTrainingConfig,
    train_registration,
    train_registration_source,
)
from uda_core.scores.registration import evaluate_registration
from uda_core.spatial.warp import DisplacementGrid, label_to_displacement, warp_image
from uda_core.tasks.registration_data import (
    RegSlices,
    load_registration_slices,
    make_registration_pairs,
    pairs_from_slices,
)

SMALL_NET = {"radius_px": 3.0, "n_per_axis": 7, "stride": 4, "features": 8, "width": 8,
             "smooth_sigma_px": 2.0}
GRID = DisplacementGrid(3.0, 7)
TINY_GRID = {"spacing_mm": (4.0, 4.0, 4.0), "in_plane_shape": (24, 28),
             "normalisation": {"kind": "percentile_zscore", "lower_percentile": 0.5,
                               "upper_percentile": 99.5, "foreground": "otsu"}}


def blob_slices(n=6, shape=(32, 32), seed=0) -> RegSlices:
    """Random Gaussian blobs inside a disc 'brain' (labels 1..3 by intensity)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    disc = (y - shape[0] / 2) ** 2 + (x - shape[1] / 2) ** 2 < (0.4 * min(shape)) ** 2
    images = np.zeros((n, *shape), np.float32)
    for i in range(n):
        for _ in range(10):
            cy, cx, s = rng.uniform(4, shape[0] - 4), rng.uniform(4, shape[1] - 4), 3.0
            images[i] += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
        images[i] *= disc
    labels = np.where(disc, 1 + np.digitize(images, [0.3, 0.7]), 0).astype(np.int64)
    return RegSlices(fixed=images, moving_source=images, labels=labels,
                     subjects=np.zeros(n, np.int64))


def tiny_template() -> dict[str, Volume]:
    """A 3 mm ellipsoid 'head' (our own phantom) for make_subject: t1, gm, wm maps in 0..1."""
    shape = (36, 42, 36)
    centre = (np.asarray(shape) - 1) / 2
    grids = np.meshgrid(*[(np.arange(n) - c) * 3.0 for n, c in zip(shape, centre, strict=True)],
                        indexing="ij")
    radius = np.sqrt((grids[0] / 40) ** 2 + (grids[1] / 50) ** 2 + (grids[2] / 40) ** 2)
    wm = np.clip((0.6 - radius) * 8, 0, 1)
    gm = np.clip((0.85 - radius) * 8, 0, 1) - wm
    t1 = np.clip((1.0 - radius) * 8, 0, 1) * (0.3 + 0.3 * gm + 0.6 * wm)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -centre * 3.0
    return {k: Volume(np.clip(v, 0, 1).astype(np.float32), affine)
            for k, v in (("t1", t1), ("gm", gm), ("wm", wm))}


def test_pairs_from_slices_truth_and_labels():
    slices = blob_slices()
    pairs = pairs_from_slices(slices, [0, 2, 3], np.random.default_rng(0),
                              displacement_grid=GRID, stride=4, max_px=3.0)
    assert len(pairs) == 3
    assert pairs.fixed.shape == pairs.moving.shape == (3, 1, 32, 32)
    assert pairs.disp.shape == (3, 2, 32, 32) and pairs.disp_cp.shape == (3, 2, 8, 8)
    assert pairs.labels_cp.dtype == torch.int64 and pairs.labels_cp.shape == (3, 8, 8)
    assert pairs.mask_cp.dtype == torch.bool and 0 < pairs.mask_cp.float().mean() < 1
    # the labels are the nearest candidates of the block-mean truth
    error = (label_to_displacement(pairs.labels_cp, GRID) - pairs.disp_cp).abs()
    assert error.max() <= GRID.step_px / 2 + 1e-4
    back = warp_image(pairs.moving, pairs.disp)
    inner = (slice(None), 0, slice(6, -6), slice(6, -6))
    before = (pairs.moving - pairs.fixed)[inner].abs().mean()
    assert (back - pairs.fixed)[inner].abs().mean() < before / 4
    assert pairs.subset(slice(0, 2)).fixed.shape[0] == 2


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    net = DiscreteRegNet(**SMALL_NET)
    pairs = pairs_from_slices(blob_slices(), np.arange(6), np.random.default_rng(1),
                              displacement_grid=net.grid, stride=4, max_px=3.0)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = net(pairs.fixed, pairs.moving)
        loss = source_supervised_loss(out, pairs.labels_cp, pairs.disp_cp, l2_weight=0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.9 * losses[0]


def test_loss_weights_and_l2_term():
    torch.manual_seed(0)
    net = DiscreteRegNet(**SMALL_NET)
    pairs = pairs_from_slices(blob_slices(2), [0, 1], np.random.default_rng(2),
                              displacement_grid=net.grid, stride=4)
    out = net(pairs.fixed, pairs.moving)
    plain = source_supervised_loss(out, pairs.labels_cp)
    assert plain.dim() == 0
    with_l2 = source_supervised_loss(out, pairs.labels_cp, pairs.disp_cp, l2_weight=1.0)
    assert with_l2 > plain
    ones = torch.ones_like(pairs.labels_cp, dtype=torch.float32)
    torch.testing.assert_close(source_supervised_loss(out, pairs.labels_cp, weight_cp=ones),
                               plain)


class TruthNet(torch.nn.Module):
    """Returns the true answer for the pairs it was made with (to test the scores)."""

    def __init__(self, pairs, grid):
        super().__init__()
        self.pairs, self.grid, self.calls = pairs, grid, 0

    def forward(self, fixed, moving):
        n = fixed.shape[0]
        part = self.pairs.subset(slice(self.calls, self.calls + n))
        self.calls += n
        probs = torch.nn.functional.one_hot(part.labels_cp, self.grid.n_labels)
        return {"probs": probs.permute(0, 3, 1, 2).float(), "disp_cp": part.disp_cp,
                "disp": part.disp}


def test_scores_of_a_perfect_and_of_a_still_network():
    pairs = pairs_from_slices(blob_slices(), np.arange(6), np.random.default_rng(3),
                              displacement_grid=GRID, stride=4, max_px=3.0)
    perfect = evaluate_registration(TruthNet(pairs, GRID), pairs, batch_size=4,
                                    spacing_mm=(2.0, 2.0))
    assert perfect["accuracy"] == 1.0 and perfect["epe_mm"] < 1e-5
    assert perfect["dice_after"] > perfect["dice_before"] and perfect["folding"] == 0.0
    assert perfect["epe_identity_mm"] > 0.5 and perfect["pairs"] == 6

    class Still(torch.nn.Module):
        def forward(self, fixed, moving):
            n, _, h, w = fixed.shape
            probs = torch.zeros(n, GRID.n_labels, h // 4, w // 4)
            probs[:, GRID.centre_label] = 1
            return {"probs": probs, "disp_cp": torch.zeros(n, 2, h // 4, w // 4),
                    "disp": torch.zeros(n, 2, h, w)}

    still = evaluate_registration(Still(), pairs, spacing_mm=(2.0, 2.0))
    assert still["accuracy"] == pytest.approx(still["accuracy_identity"])
    assert still["epe_mm"] == pytest.approx(still["epe_identity_mm"], rel=1e-5)
    assert still["dice_after"] == pytest.approx(still["dice_before"])


def test_training_loop_progress_validation_and_cancel():
    slices = blob_slices(8)
    val = pairs_from_slices(slices, [0, 1], np.random.default_rng(9), displacement_grid=GRID,
                            stride=4)
    config = RegTrainingConfig(steps=4, batch_size=2, eval_every=2, **SMALL_NET)
    seen = []
    net, summary = train_registration(slices, config, val_pairs=val,
                                      progress=lambda *a: seen.append(a[:3]))
    assert summary["status"] == "completed" and summary["steps_done"] == 4
    assert summary["best_step"] in (2, 4) and 0 <= summary["val"]["accuracy"] <= 1
    assert ("train", 4, 4) in seen and ("validate", 2, 4) in seen
    assert not net.training

    calls = []

    def cancel() -> bool:  # asked before every step: stop before the third
        calls.append(1)
        return len(calls) > 2

    _, stopped = train_registration(slices, config, cancel=cancel)
    assert stopped["status"] == "cancelled" and stopped["steps_done"] == 2


def test_demo_subject_pairs_on_a_phantom():
    template = tiny_template()
    slices = load_registration_slices([0], "t2", grid=TINY_GRID, template=template,
                                      volume_spacing_mm=4.0)
    assert slices.fixed.shape[1:] == (24, 28) and slices.fixed.shape == slices.labels.shape
    assert not np.allclose(slices.fixed, slices.moving_source)  # T2 differs from T1
    pairs = make_registration_pairs([0], grid=TINY_GRID, template=template, stride=4,
                                    displacement_grid=GRID, max_px=2.0)
    assert pairs.fixed.shape == (len(slices), 1, 24, 28) and set(pairs.subjects.tolist()) == {0}
    again = make_registration_pairs([0], grid=TINY_GRID, template=template, stride=4,
                                    displacement_grid=GRID, max_px=2.0)
    assert torch.equal(pairs.moving, again.moving)  # reproducible from the seed


def test_train_registration_source_end_to_end(tmp_path):
    config = RegTrainingConfig(subjects=(0,), val_subjects=(1,), eval_subjects=(2,), steps=2,
                               batch_size=2, spacing_mm=(4.0, 4.0, 4.0),
                               in_plane_shape=(24, 28), **SMALL_NET)
    bundle, summary = train_registration_source(config, tmp_path / "reg.pt",
                                                template=tiny_template())
    assert {"eval_t1_t1", "eval_t1_t2", "val", "total_seconds"} <= set(summary)
    loaded, net = load_registration_model(tmp_path / "reg.pt")
    assert loaded.task == "registration" and loaded.in_plane_shape == [24, 28]
    assert loaded.provenance["summary"]["steps_done"] == 2
    assert loaded.provenance["data"]["train_subjects"] == [0]
    assert isinstance(net, DiscreteRegNet) and net.grid == GRID


def test_bundle_round_trip(tmp_path):
    torch.manual_seed(0)
    net = DiscreteRegNet(**SMALL_NET).eval()
    bundle = make_registration_bundle(net, in_plane_shape=(32, 36),
                                      provenance={"method": "test"})
    assert bundle.architecture == "discrete_regnet" and bundle.task == "registration"
    assert bundle.class_names == displacement_label_names(GRID) and len(bundle.class_names) == 49
    assert bundle.class_names[GRID.centre_label] == "dy=+0,dx=+0"
    assert bundle.early_head_state_dict is None and bundle.class_ratio_prior is None
    path = save_bundle(bundle, tmp_path / "reg.pt")
    loaded, rebuilt = load_registration_model(path)
    assert loaded.arch_kwargs == net.config and loaded.provenance["task"] == "registration"
    fixed, moving = torch.rand(2, 1, 1, 32, 36, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(fixed, moving)["disp"], net(fixed, moving)["disp"])
    assert any(line.startswith("Task: registration; 49") for line in describe(loaded))
    assert load_model(path, task=None).task == "registration"
    with pytest.raises(ValueError):
        make_registration_bundle(net, in_plane_shape=(30, 32))  # not a multiple of stride


def test_segmentation_and_registration_bundles_are_not_interchangeable(tmp_path,
                                                                       tiny_bundle_path):
    with pytest.raises(ModelError) as info:
        load_registration_model(tiny_bundle_path)
    message = str(info.value)
    assert "\n" not in message and tiny_bundle_path in message
    assert "segmentation model" in message and "not a registration model" in message

    path = save_bundle(make_registration_bundle(DiscreteRegNet(**SMALL_NET)), tmp_path / "r.pt")
    with pytest.raises(ModelError) as info:
        load_model(path)  # callers that need segmentation (predict, adapt) get a clear line
    assert "\n" not in str(info.value) and "is a registration model" in str(info.value)
    assert str(path) in str(info.value)


def test_label_count_mismatch_is_refused(tmp_path):
    bundle = make_registration_bundle(DiscreteRegNet(**SMALL_NET))
    bundle.class_names = bundle.class_names[:-1]
    with pytest.raises(ModelError, match="label-count mismatch"):
        save_bundle(bundle, tmp_path / "bad.pt")
