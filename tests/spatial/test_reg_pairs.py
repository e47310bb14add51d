"""Registration training pairs: random smooth fields, their inverses, pairs, model-grid slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uda_core.grid.pair_slices import registration_slices
from uda_core.io import Volume
from uda_core.spatial.fields import (
    displacement_at_control_points,
    invert_displacement_2d,
    jacobian_determinant_2d,
    make_pairs,
    random_smooth_displacement_2d,
    warp_slice,
)

INNER = (slice(8, -8), slice(8, -8))  # away from the edges, where sampling clamps


def smooth_image(shape=(48, 56), seed=0) -> np.ndarray:
    """Gaussian blobs of both signs, rescaled to 0..1 (float32)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    image = np.zeros(shape)
    for _ in range(12):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        sigma = rng.uniform(3.0, 6.0)
        image += rng.choice([-1.0, 1.0]) * np.exp(-((y - cy)**2 + (x - cx)**2) / (2 * sigma**2))
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def test_random_field_is_smooth_bounded_and_does_not_fold():
    field = random_smooth_displacement_2d((40, 52), np.random.default_rng(0), max_px=4.0,
                                          smooth_px=6.0)
    assert field.shape == (2, 40, 52) and field.dtype == np.float32
    length = np.sqrt((field**2).sum(axis=0))
    assert length.max() <= 4.0 + 1e-4 and length.max() > 1.0
    assert jacobian_determinant_2d(field).min() > 0.2
    assert np.abs(np.diff(field, axis=1)).max() < 1.0  # smooth: small change per pixel
    again = random_smooth_displacement_2d((40, 52), np.random.default_rng(0), max_px=4.0,
                                          smooth_px=6.0)
    np.testing.assert_array_equal(field, again)


def test_random_field_shrinks_when_it_would_fold():
    field = random_smooth_displacement_2d((40, 40), np.random.default_rng(1), max_px=30.0,
                                          smooth_px=3.0)
    assert jacobian_determinant_2d(field).min() > 0.2
    assert np.sqrt((field**2).sum(axis=0)).max() < 30.0


def test_jacobian_of_identity_and_of_a_fold():
    assert np.allclose(jacobian_determinant_2d(np.zeros((2, 8, 9))), 1.0)
    rows = np.arange(10, dtype=np.float64)[:, None] * np.ones((1, 6))
    fold = np.stack([-2.0 * rows, np.zeros_like(rows)])  # y -> -y: det = -1
    assert np.allclose(jacobian_determinant_2d(fold), -1.0)


def test_warp_slice_convention_shift_and_labels():
    image = smooth_image((20, 24))
    assert np.array_equal(warp_slice(image, np.zeros((2, 20, 24))), image)
    shift = np.zeros((2, 20, 24), np.float32)
    shift[0] = 2.0  # dy = +2 rows: out(y, x) = image(y + 2, x)
    out = warp_slice(image, shift)
    np.testing.assert_allclose(out[:-2], image[2:], atol=1e-6)
    np.testing.assert_allclose(out[-2:], np.repeat(image[-1:], 2, axis=0), atol=1e-6)  # border
    labels = (image * 4).astype(np.int64)
    moved = warp_slice(labels, shift + 0.3, order=0)
    assert moved.dtype == np.int64 and set(np.unique(moved)) <= set(np.unique(labels))
    with pytest.raises(ValueError):
        warp_slice(image, shift[:, :-1])


def test_inverse_of_an_affine_field_matches_the_exact_inverse():
    h, w = 40, 44
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.array([[0.06, -0.04], [0.03, -0.05]])  # u(p) = A (p - c), p = (y, x)
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    p = np.stack([y - c[0], x - c[1]])
    u = np.einsum("ij,jhw->ihw", a, p).astype(np.float32)
    exact = -np.einsum("ij,jhw->ihw", np.linalg.inv(np.eye(2) + a) @ a, p)
    v = invert_displacement_2d(u, iterations=10)
    assert np.abs(v - exact)[(slice(None), *INNER)].max() < 1e-3


def test_inverse_of_a_random_field_composes_to_identity():
    rng = np.random.default_rng(2)
    u = random_smooth_displacement_2d((48, 56), rng, max_px=5.0, smooth_px=8.0)
    v = invert_displacement_2d(u, iterations=10)
    # phi(phi^-1(y)) = y: v(y) + u(y + v(y)) = 0, and phi^-1(phi(x)) = x: u + v(x + u) = 0.
    right = v + np.stack([warp_slice(u[c], v) for c in range(2)])
    left = u + np.stack([warp_slice(v[c], u) for c in range(2)])
    assert np.abs(right[(slice(None), *INNER)]).max() < 0.02
    assert np.abs(left[(slice(None), *INNER)]).max() < 0.05
    assert np.abs(invert_displacement_2d(u, iterations=1) - v).max() > 0.05  # iterations matter


def test_make_pairs_true_displacement_warps_moving_back_onto_fixed():
    images = np.stack([smooth_image(seed=s) for s in range(3)])
    labels = (images * 3).astype(np.int64)
    pairs = make_pairs(images, labels, np.random.default_rng(0), max_px=4.0, smooth_px=8.0)
    assert pairs["fixed"].shape == pairs["moving"].shape == (3, 1, 48, 56)
    assert pairs["disp"].shape == (3, 2, 48, 56) and pairs["disp"].dtype == torch.float32
    assert pairs["fixed_labels"].dtype == pairs["moving_labels"].dtype == torch.int64
    np.testing.assert_array_equal(pairs["fixed"][:, 0].numpy(), images)
    for i in range(3):
        fixed = pairs["fixed"][i, 0].numpy()
        moving = pairs["moving"][i, 0].numpy()
        disp = pairs["disp"][i].numpy()
        before = np.abs(moving - fixed)[INNER].mean()
        after = np.abs(warp_slice(moving, disp) - fixed)[INNER].mean()
        assert after < 0.01 and after < before / 5
        back = warp_slice(pairs["moving_labels"][i].numpy(), disp, order=0)
        assert (back == labels[i])[INNER].mean() > 0.97


def test_make_pairs_deforms_the_other_modality_and_is_reproducible():
    images = smooth_image(seed=4)[None]
    other = 1.0 - images**2  # another contrast, voxel-aligned
    pairs = make_pairs(images, None, np.random.default_rng(5), moving_images=other)
    assert pairs["fixed_labels"] is None and pairs["moving_labels"] is None
    back = warp_slice(pairs["moving"][0, 0].numpy(), pairs["disp"][0].numpy())
    assert np.abs(back - other[0])[INNER].mean() < 0.01
    again = make_pairs(images, None, np.random.default_rng(5), moving_images=other)
    assert torch.equal(pairs["moving"], again["moving"])
    with pytest.raises(ValueError):
        make_pairs(images, None, np.random.default_rng(5), moving_images=other[:, :-1])


def test_displacement_at_control_points_is_exact_for_linear_fields():
    h, w, stride = 16, 20, 4
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                          torch.arange(w, dtype=torch.float32), indexing="ij")
    disp = torch.stack([0.1 * y + 0.2 * x, -0.3 * x + 1.0])[None]
    cp = displacement_at_control_points(disp, stride)
    assert cp.shape == (1, 2, h // stride, w // stride)
    cy = (torch.arange(h // stride) + 0.5) * stride - 0.5
    cx = (torch.arange(w // stride) + 0.5) * stride - 0.5
    expect = torch.stack([0.1 * cy[:, None] + 0.2 * cx[None, :],
                          (-0.3 * cx[None, :] + 1.0).expand(len(cy), -1)])
    torch.testing.assert_close(cp[0], expect)


def _head(shape=(20, 24, 12)) -> np.ndarray:
    """A bright ellipsoid with a darker core (float32), filling the middle slices."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    return (np.where(r < 0.8, 100.0, 5.0) - np.where(r < 0.4, 40.0, 0.0)).astype(np.float32)


def test_registration_slices_put_both_modalities_on_one_grid():
    data = _head()
    t1 = Volume(data=data, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    # The other modality: inverted contrast, stored left-right flipped (same world content).
    flipped = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped[0, 3] = 2.0 * (data.shape[0] - 1)
    other = Volume(data=np.ascontiguousarray((200.0 - data)[::-1]), affine=flipped)
    labels = Volume(data=(data > 50).astype(np.int16), affine=t1.affine)
    grid = {"spacing_mm": (2.0, 2.0, 2.0), "in_plane_shape": (16, 20),
            "normalisation": {"kind": "percentile_zscore", "lower_percentile": 0.5,
                              "upper_percentile": 99.5, "foreground": "all"}}
    fixed, moved, label_slices = registration_slices(t1, other, grid, labels=labels)
    assert fixed.dtype == moved.dtype == np.float32 and label_slices.dtype == np.int64
    assert fixed.shape == moved.shape == label_slices.shape
    assert fixed.shape[1:] == (16, 20) and 0 < fixed.shape[0] < data.shape[2]  # empty dropped
    # Inverted contrast on the same grid: z-scored, the two are exact negatives.
    np.testing.assert_allclose(moved, -fixed, atol=1e-4)
    assert set(np.unique(label_slices)) == {0, 1}

    every, none = registration_slices(t1, None, grid, min_fraction=0.0)
    assert none is None and every.shape[0] == data.shape[2]
