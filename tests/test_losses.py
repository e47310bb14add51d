"""Tests for uda_core.losses: hand-computed values on tiny tensors, gradchecks in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from uda_core.losses import (
    discrepancy_l1,
    kl_class_ratio,
    pairwise_divergence,
    projected_emd,
    sliced_wasserstein,
    soft_class_ratio,
    weighted_entropy,
)


def _random_probs(*shape: int, seed: int = 0) -> torch.Tensor:
    """Softmax of random logits, float64, classes along dim 1."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(*shape, generator=g, dtype=torch.float64), dim=1)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


# A 1 x 2 x 1 x 2 prediction: pixel A = (0.25, 0.75), pixel B = (0.5, 0.5).
TINY = torch.tensor([[[[0.25, 0.5]], [[0.75, 0.5]]]], dtype=torch.float64)


# ----------------------------------------------------------------------------- entropy


def test_weighted_entropy_hand_value():
    w = [1.0, 2.0]
    expected = (
        -(
            1 * 0.25 * math.log(0.25)
            + 2 * 0.75 * math.log(0.75)
            + 1 * 0.5 * math.log(0.5)
            + 2 * 0.5 * math.log(0.5)
        )
        / 2
    )  # B * |Omega| = 2 pixels
    got = weighted_entropy(TINY, class_weights=w)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, abs=1e-8)


def test_weighted_entropy_default_is_mean_pixel_entropy_numpy_loop():
    p = _random_probs(2, 3, 2, 3)
    a = p.numpy()
    total = 0.0
    for b in range(2):
        for y in range(2):
            for x in range(3):
                total -= sum(a[b, c, y, x] * math.log(a[b, c, y, x] + 1e-10) for c in range(3))
    assert weighted_entropy(p).item() == pytest.approx(total / 12, abs=1e-10)


def test_weighted_entropy_rejects_wrong_weight_count():
    with pytest.raises(ValueError, match="class_weights"):
        weighted_entropy(TINY, class_weights=[1.0, 2.0, 3.0])


# ----------------------------------------------------------------------------- class ratio


def test_soft_class_ratio_hand_value():
    # pixel A / max -> (1/3, 1); pixel B / max -> (1, 1); S = (4/3, 2); tau_hat = (0.4, 0.6)
    tau_hat = soft_class_ratio(TINY)
    assert tau_hat.shape == (1, 2)
    np.testing.assert_allclose(tau_hat.numpy(), [[0.4, 0.6]], atol=1e-12)


def test_soft_class_ratio_numpy_loop():
    p = _random_probs(2, 3, 2, 2, 2, seed=1)  # 3D spatial
    a = p.numpy()
    expected = np.zeros((2, 3))
    for b in range(2):
        for z in range(2):
            for y in range(2):
                for x in range(2):
                    m = max(a[b, :, z, y, x])
                    for c in range(3):
                        expected[b, c] += a[b, c, z, y, x] / m
        expected[b] /= expected[b].sum()
    np.testing.assert_allclose(soft_class_ratio(p).numpy(), expected, atol=1e-12)


def test_kl_class_ratio_hand_value_and_weights():
    prior = torch.tensor([0.5, 0.5], dtype=torch.float64)
    t0 = 0.4 * math.log(0.4 / 0.5)
    t1 = 0.6 * math.log(0.6 / 0.5)
    assert kl_class_ratio(TINY, prior).item() == pytest.approx(t0 + t1, abs=1e-8)
    got = kl_class_ratio(TINY, prior, class_weights=[3.0, 0.5])
    assert got.item() == pytest.approx(3.0 * t0 + 0.5 * t1, abs=1e-8)


def test_kl_class_ratio_zero_when_prediction_equals_prior():
    p = _random_probs(3, 4, 5, 5, seed=2)
    per_image_prior = soft_class_ratio(p).detach()  # (B, C)
    assert kl_class_ratio(p, per_image_prior).item() == pytest.approx(0.0, abs=1e-12)
    # (C,) prior broadcast over the batch: zero when every image matches it
    same = _random_probs(1, 4, 5, 5, seed=3).expand(3, 4, 5, 5)
    prior = soft_class_ratio(same)[0].detach()
    assert kl_class_ratio(same, prior).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_class_ratio_prior_floor():
    # prior (0, 1): floored to (1e-4, 1) then renormalised, so the loss stays moderate
    prior = torch.tensor([0.0, 1.0], dtype=torch.float64)
    floored = np.array([1e-4, 1.0]) / 1.0001
    expected = 0.4 * (math.log(0.4) - math.log(floored[0] + 1e-10)) + 0.6 * (
        math.log(0.6) - math.log(floored[1])
    )
    assert kl_class_ratio(TINY, prior).item() == pytest.approx(expected, abs=1e-7)
    # without a floor the zero prior costs log(1e-10): far larger
    unfloored = kl_class_ratio(TINY, prior, prior_floor=0.0).item()
    assert unfloored == pytest.approx(0.4 * (math.log(0.4) - math.log(1e-10)) + 0.6 * math.log(0.6))
    assert unfloored > 2 * expected


def test_kl_class_ratio_rejects_bad_prior_shape():
    with pytest.raises(ValueError, match="prior must have shape"):
        kl_class_ratio(TINY, torch.ones(3) / 3)


# ----------------------------------------------------------------------------- divergences


P_PIX = (0.2, 0.8)
Q_PIX = (0.5, 0.5)


def _two_pixel_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 2, 2): pixel 0 compares P_PIX with Q_PIX, pixel 1 compares identical vectors."""
    p = torch.tensor([[[P_PIX[0], 0.3], [P_PIX[1], 0.7]]], dtype=torch.float64)
    q = torch.tensor([[[Q_PIX[0], 0.3], [Q_PIX[1], 0.7]]], dtype=torch.float64)
    return p, q


@pytest.mark.parametrize(
    "kind, first_pixel",
    [
        ("kl", 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)),
        ("hellinger", 2.0 - 2.0 * (math.sqrt(0.1) + math.sqrt(0.4))),
        ("bhattacharyya", -math.log(math.sqrt(0.1) + math.sqrt(0.4))),
    ],
)
def test_pairwise_divergence_hand_values(kind, first_pixel):
    p, q = _two_pixel_pair()
    got = pairwise_divergence(p, q, kind=kind)
    assert got.dim() == 0
    # the identical second pixel contributes 0; the mean over 2 pixels halves the first
    assert got.item() == pytest.approx(first_pixel / 2, abs=1e-7)


@pytest.mark.parametrize("kind", ["kl", "hellinger", "bhattacharyya"])
def test_pairwise_divergence_zero_for_identical(kind):
    p = _random_probs(2, 3, 4, 4, seed=4)
    assert pairwise_divergence(p, p, kind=kind).item() == pytest.approx(0.0, abs=1e-12)


def test_pairwise_divergence_unknown_kind_names_allowed():
    p, q = _two_pixel_pair()
    with pytest.raises(ValueError) as info:
        pairwise_divergence(p, q, kind="brier")
    message = str(info.value)
    for name in ("kl", "hellinger", "bhattacharyya", "brier"):
        assert name in message


def test_discrepancy_l1_hand_value():
    p, q = _two_pixel_pair()
    # |0.2-0.5| + |0.8-0.5| over 4 elements
    assert discrepancy_l1(p, q).item() == pytest.approx(0.6 / 4, abs=1e-12)


# ----------------------------------------------------------------------------- sliced W


def _swd_numpy(a1: np.ndarray, a2: np.ndarray, directions: np.ndarray) -> float:
    """Independent loop version: project, sort over samples, mean squared difference."""
    n, n_labels = a1.shape
    total = 0.0
    for k in range(directions.shape[1]):
        d = directions[:, k] / math.sqrt(sum(v * v for v in directions[:, k]))
        s1 = sorted(sum(a1[i, j] * d[j] for j in range(n_labels)) for i in range(n))
        s2 = sorted(sum(a2[i, j] * d[j] for j in range(n_labels)) for i in range(n))
        total += sum((x - y) ** 2 for x, y in zip(s1, s2, strict=True))
    return total / (n * directions.shape[1])


def test_sliced_wasserstein_matches_numpy_loop():
    p1 = _random_probs(6, 3, seed=5)
    p2 = _random_probs(6, 3, seed=6)
    got = sliced_wasserstein(p1, p2, n_projections=5, generator=torch.Generator().manual_seed(7))
    directions = torch.randn(3, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = _swd_numpy(p1.numpy(), p2.numpy(), directions.numpy())
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_sliced_wasserstein_spatial_layout_and_permutation():
    p1 = _random_probs(2, 4, 3, 3, seed=8)
    p2 = _random_probs(2, 4, 3, 3, seed=9)
    flat1 = p1.movedim(1, -1).reshape(-1, 4)
    flat2 = p2.movedim(1, -1).reshape(-1, 4)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(3)

    spatial = sliced_wasserstein(p1, p2, n_projections=16, generator=gen())
    flat = sliced_wasserstein(flat1, flat2, n_projections=16, generator=gen())
    assert spatial.item() == pytest.approx(flat.item(), abs=1e-12)
    # a reordering of the samples does not change the sorted projections
    shuffled = flat1[torch.randperm(flat1.shape[0], generator=gen())]
    same = sliced_wasserstein(flat1, shuffled, generator=gen())
    assert same.item() == pytest.approx(0.0, abs=1e-14)


# ----------------------------------------------------------------------------- projected EMD


def _one_hot_grid(gy: int, gx: int, iy: int, ix: int) -> torch.Tensor:
    """(1, gy*gx, 1) all mass on label iy*gx + ix."""
    p = torch.zeros(1, gy * gx, 1, dtype=torch.float64)
    p[0, iy * gx + ix, 0] = 1.0
    return p


def _pemd_numpy(a1: np.ndarray, a2: np.ndarray, grid_shape, n_directions: int) -> float:
    """Independent loop version of the documented binning.

    Binned CDF at bin j = sum_l p_l * clip(j + 1 - u_l, 0, 1), with u_l the projected
    displacement of label l measured from the smallest one (this is what splitting each mass
    linearly between its two neighbouring bins and taking the cumulative sum gives).
    """
    gy, gx = grid_shape
    batch, n_labels, n_points = a1.shape
    total = 0.0
    for k in range(n_directions):
        theta = k * math.pi / n_directions
        t = [
            (ix - (gx - 1) / 2) * math.cos(theta) + (iy - (gy - 1) / 2) * math.sin(theta)
            for iy in range(gy)
            for ix in range(gx)
        ]
        u = [v - min(t) for v in t]
        # share of each label's mass at or below bin j
        below = [[min(max(j + 1 - ul, 0.0), 1.0) for ul in u] for j in range(len(u) + 1)]
        n_bins = int(math.ceil(max(u) - 1e-9)) + 1
        for b in range(batch):
            for x in range(n_points):
                for j in range(n_bins):
                    f1 = sum(a1[b, lab, x] * below[j][lab] for lab in range(n_labels))
                    f2 = sum(a2[b, lab, x] * below[j][lab] for lab in range(n_labels))
                    total += abs(f1 - f2)
    return total / (n_directions * batch * n_points)


def test_projected_emd_identical_is_zero():
    p = _random_probs(2, 15, 4, 4, seed=10)
    assert projected_emd(p, p, (3, 5)).item() == 0.0


def test_projected_emd_one_bin_shift_exact():
    a = _one_hot_grid(5, 5, 2, 1)
    b = _one_hot_grid(5, 5, 2, 2)  # one step along x
    # x axis: 1 bin; y axis: nothing moves -> mean 0.5
    assert projected_emd(a, b, (5, 5), n_directions=2).item() == pytest.approx(0.5, abs=1e-12)
    c = _one_hot_grid(5, 5, 3, 1)  # one step along y
    assert projected_emd(a, c, (5, 5), n_directions=2).item() == pytest.approx(0.5, abs=1e-12)
    # with both diagonals the step projects to 1/sqrt(2) on each: (1 + 0 + 2/sqrt 2) / 4
    expected4 = (1.0 + math.sqrt(2.0)) / 4.0
    assert projected_emd(a, b, (5, 5), n_directions=4).item() == pytest.approx(expected4, abs=1e-12)


def test_projected_emd_respects_distance_while_l1_does_not():
    gy, gx = 3, 7
    start = _one_hot_grid(gy, gx, 1, 0)
    near = _one_hot_grid(gy, gx, 1, 1)
    far = _one_hot_grid(gy, gx, 1, 5)
    for k in (2, 4):
        assert projected_emd(start, near, (gy, gx), k) < projected_emd(start, far, (gy, gx), k)
    assert projected_emd(start, far, (gy, gx), 2).item() == pytest.approx(2.5, abs=1e-12)
    assert discrepancy_l1(start, near).item() == pytest.approx(discrepancy_l1(start, far).item())


@pytest.mark.parametrize("n_directions", [2, 3, 4])
def test_projected_emd_matches_numpy_loop(n_directions):
    p1 = _random_probs(2, 12, 3, seed=11)
    p2 = _random_probs(2, 12, 3, seed=12)
    expected = _pemd_numpy(p1.numpy(), p2.numpy(), (3, 4), n_directions)
    got = projected_emd(p1, p2, (3, 4), n_directions=n_directions)
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_projected_emd_rejects_wrong_grid():
    p = _random_probs(1, 9, 2, seed=13)
    with pytest.raises(ValueError, match="grid_shape"):
        projected_emd(p, p, (2, 5))


# ----------------------------------------------------------------------------- gradients


def test_gradcheck_entropy_and_class_ratio():
    p = _leaf(_random_probs(2, 3, 2, 2, seed=20))
    w = torch.tensor([0.2, 1.0, 0.7], dtype=torch.float64)
    assert gradcheck(lambda x: weighted_entropy(x, w), (p,))
    assert gradcheck(soft_class_ratio, (p,))
    prior = _leaf(torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], dtype=torch.float64))
    assert gradcheck(lambda x, t: kl_class_ratio(x, t, class_weights=w), (p, prior))


@pytest.mark.parametrize("kind", ["kl", "hellinger", "bhattacharyya"])
def test_gradcheck_pairwise_divergence(kind):
    p = _leaf(_random_probs(2, 3, 2, 2, seed=21))
    q = _leaf(_random_probs(2, 3, 2, 2, seed=22))
    assert gradcheck(lambda a, b: pairwise_divergence(a, b, kind=kind), (p, q))


def test_gradcheck_discrepancies():
    p = _leaf(_random_probs(2, 6, 3, seed=23))
    q = _leaf(_random_probs(2, 6, 3, seed=24))
    assert gradcheck(discrepancy_l1, (p, q))

    def swd(a, b):
        return sliced_wasserstein(a, b, n_projections=8, generator=torch.Generator().manual_seed(0))

    assert gradcheck(swd, (p, q))
    # unnormalised positive inputs keep every CDF gap (the last bin's too) away from 0, where
    # |.| has no derivative
    g = torch.Generator().manual_seed(25)
    a = _leaf(torch.rand(2, 6, 3, generator=g, dtype=torch.float64) + 0.1)
    b = _leaf(2.0 * torch.rand(2, 6, 3, generator=g, dtype=torch.float64) + 0.1)
    for k in (2, 3, 4):
        assert gradcheck(lambda x, y, k=k: projected_emd(x, y, (2, 3), n_directions=k), (a, b))


def test_kl_brain_class_ratio_by_hand():
    from uda_core.losses import kl_brain_class_ratio
    # one slice of 4 pixels, one-hot: background, CSF, GM, GM -> sizes (1, 1, 2, 0)
    probs = torch.zeros(1, 4, 2, 2)
    probs[0, 0, 0, 0] = probs[0, 1, 0, 1] = probs[0, 2, 1, 0] = probs[0, 2, 1, 1] = 1.0
    probs = probs.clamp_min(1e-12)
    probs = probs / probs.sum(1, keepdim=True)
    prior = torch.tensor([0.4, 0.2, 0.2, 0.2])          # brain: 1/3 each
    tau_hat = torch.tensor([1 / 3, 2 / 3, 1e-12])
    expected = float((tau_hat * (torch.log(tau_hat + 1e-10) - math.log(1 / 3))).sum())
    assert float(kl_brain_class_ratio(probs, prior)) == pytest.approx(expected, abs=1e-5)
    # a prior equal to the brain ratio gives 0 whatever the background share
    match = torch.tensor([0.9, 0.1 / 3, 0.2 / 3, 1e-4])
    assert float(kl_brain_class_ratio(probs, match, prior_floor=1e-4)) < 1e-3
