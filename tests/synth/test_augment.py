"""uda_core.synth.augment on tiny batches: deterministic per seed, shapes and dtypes kept,
labels moving with the image and keeping their classes, contrast never touching labels."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from uda_core.synth.augment import (
    PRESETS,
    AugmentConfig,
    Augmenter,
    augment_batch,
    augment_contrast,
    random_bias_field,
    random_blur,
    random_flip,
    random_gamma,
    random_intensity_curve,
    random_noise,
    random_rotate_scale,
    random_tissue_contrast,
    restore_normalisation,
    rotate_scale,
    to_unit_range,
)

B, X, Y = 4, 12, 10   # non-square on purpose


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised-looking batch: a disc of two 'tissues' on a constant background (the
    minimum), plus a little texture; labels 0 (background), 1 and 2 (B, X, Y)."""
    g = _gen(seed)
    xs, ys = torch.meshgrid(torch.linspace(-1, 1, X), torch.linspace(-1, 1, Y), indexing="ij")
    r = (xs ** 2 + ys ** 2).sqrt()
    labels = torch.where(r < 0.4, 2, torch.where(r < 0.8, 1, 0)).long().expand(B, X, Y)
    images = torch.where(labels == 2, 1.0, torch.where(labels == 1, 0.0, -2.0)).float()
    images = images + 0.1 * torch.rand(B, X, Y, generator=g) * (labels > 0)
    return images.unsqueeze(1).contiguous(), labels.contiguous()


def _unit() -> torch.Tensor:
    return to_unit_range(_batch()[0])


# every random function as f(seed) -> tuple of outputs, to check determinism generically
def _runs():
    images, labels = _batch()
    unit = to_unit_range(images)
    contrast = AugmentConfig.preset("contrast")
    return {
        "flip": lambda s: random_flip(images, labels, _gen(s)),
        "rotate_scale": lambda s: random_rotate_scale(images, labels, _gen(s)),
        "curve": lambda s: (random_intensity_curve(unit, _gen(s)),),
        "curve_nonmonotonic": lambda s: (random_intensity_curve(
            unit, _gen(s), nonmonotonic_probability=1.0),),
        "gamma": lambda s: (random_gamma(unit, _gen(s)),),
        "bias": lambda s: (random_bias_field(unit, _gen(s)),),
        "blur": lambda s: (random_blur(unit, _gen(s)),),
        "blur_one_axis": lambda s: (random_blur(unit, _gen(s), thick_slice_probability=1.0),),
        "noise": lambda s: (random_noise(unit, _gen(s)),),
        "tissue_contrast": lambda s: (random_tissue_contrast(unit, labels, _gen(s),
                                                             probability=1.0),),
        "contrast": lambda s: (augment_contrast(images, _gen(s), contrast),),
        "contrast_with_labels": lambda s: (augment_contrast(images, _gen(s), contrast,
                                                            labels),),
        "augment_batch": lambda s: augment_batch(images, labels, contrast, _gen(s)),
    }


@pytest.mark.parametrize("name", list(_runs()))
def test_same_seed_same_output_other_seed_other_output(name):
    run = _runs()[name]
    first, again, other = run(1), run(1), run(2)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(first, other, strict=True))


@pytest.mark.parametrize("name", list(_runs()))
def test_shapes_dtypes_kept_and_outputs_finite(name):
    images, labels = _batch()
    for out in _runs()[name](3):
        like = labels if out.dtype == torch.int64 else images
        assert out.shape == like.shape and out.dtype == like.dtype
        assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("seed", range(4))
def test_geometric_labels_keep_their_class_set(seed):
    images, labels = _batch()
    config = AugmentConfig(max_rotation_deg=30.0, scale_range=(0.7, 1.3))
    _, moved = augment_batch(images, labels, config, _gen(seed))
    assert set(moved.unique().tolist()) <= {0, 1, 2}


def test_flip_maps_a_pixel_to_its_left_right_mirror():
    images = torch.zeros(2, 1, X, Y)
    labels = torch.zeros(2, X, Y, dtype=torch.long)
    images[:, 0, 2, 3] = 5.0
    labels[:, 2, 3] = 1
    flipped, flipped_labels = random_flip(images, labels, _gen(0), probability=1.0)
    assert flipped[:, 0, X - 1 - 2, 3].eq(5.0).all() and flipped.sum() == 10.0
    assert flipped_labels[:, X - 1 - 2, 3].eq(1).all() and flipped_labels.sum() == 2
    same, same_labels = random_flip(images, labels, _gen(0), probability=0.0)
    assert torch.equal(same, images) and torch.equal(same_labels, labels)


def test_rotation_zero_and_scale_one_is_the_identity():
    images, labels = _batch()
    out, out_labels = rotate_scale(images, labels, torch.zeros(B), torch.ones(B))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    assert torch.equal(out_labels, labels)
    config = AugmentConfig(max_rotation_deg=0.0, scale_range=(1.0, 1.0), flip_probability=0.0)
    out, out_labels = augment_batch(images, labels, config, _gen(0))
    assert torch.equal(out, images) and torch.equal(out_labels, labels)


def test_rotation_turns_x_toward_y_and_labels_move_with_the_image():
    images = torch.zeros(1, 1, 9, 9)
    labels = torch.zeros(1, 9, 9, dtype=torch.long)
    images[0, 0, 6, 4] = 1.0      # two pixels along +X from the centre (4, 4)
    labels[0, 6, 4] = 3
    out, out_labels = rotate_scale(images, labels, torch.tensor([90.0]), torch.ones(1))
    assert out[0, 0, 4, 6] == pytest.approx(1.0, abs=1e-5)          # now along +Y
    assert out_labels[0, 4, 6] == 3 and out_labels.sum() == 3


def test_scaling_enlarges_about_the_centre_and_pads_with_background():
    images, labels = _batch()
    bigger, bigger_labels = rotate_scale(images, labels, torch.zeros(B), torch.full((B,), 1.5))
    smaller, smaller_labels = rotate_scale(images, labels, torch.zeros(B), torch.full((B,), 0.5))
    assert (bigger_labels > 0).sum() > (labels > 0).sum() > (smaller_labels > 0).sum()
    # what came in from outside the slice: the corner (background) value and label 0
    assert smaller[:, 0, 0, 0].eq(images[:, 0, 0, 0]).all()
    assert smaller_labels[:, 0, 0].eq(0).all()


def test_rotation_is_rigid_in_mm_on_non_square_pixels():
    """A 90 degree turn of a pixel 4 mm along +X, with 1 x 2 mm pixels, lands 4 mm along +Y
    (2 pixels, not 4); being 2 mm wide along Y, it becomes 2 mm (about 2 pixels) wide
    along X."""
    images = torch.zeros(1, 1, 9, 9)
    labels = torch.zeros(1, 9, 9, dtype=torch.long)
    labels[0, 8, 4] = 1
    _, out_labels = rotate_scale(images, labels, torch.tensor([90.0]), torch.ones(1),
                                 pixel_mm=(1.0, 2.0))
    hits = out_labels[0].nonzero().tolist()
    assert [4, 6] in hits and all(y == 6 and abs(x - 4) <= 1 for x, y in hits)


def test_contrast_functions_take_only_images():
    """The contrast stage changes images and leaves labels exactly as geometry made them."""
    images, labels = _batch()
    geometric = AugmentConfig()
    contrast = AugmentConfig(intensity=True)
    geo_images, geo_labels = augment_batch(images, labels, geometric, _gen(5))
    con_images, con_labels = augment_batch(images, labels, contrast, _gen(5))
    assert torch.equal(geo_labels, con_labels)
    assert not torch.equal(geo_images, con_images)
    before = labels.clone()
    augment_contrast(images, _gen(5), contrast)
    assert torch.equal(labels, before)


def test_unit_range_and_curves_stay_in_zero_to_one():
    unit = _unit()
    assert unit.amin(dim=(1, 2, 3)).eq(0).all() and unit.amax(dim=(1, 2, 3)).eq(1).all()
    for seed in range(5):
        for p in (0.0, 1.0):
            curved = random_intensity_curve(unit, _gen(seed), nonmonotonic_probability=p)
            assert curved.min() >= 0 and curved.max() <= 1
            assert curved[unit == 0].eq(0).all()             # air stays dark
        gamma = random_gamma(unit, _gen(seed))
        assert gamma.min() >= 0 and gamma.max() <= 1
    assert to_unit_range(torch.full((1, 1, 3, 3), 7.0)).eq(0).all()


def test_monotonic_curve_keeps_the_order_of_intensities():
    ramp = torch.linspace(0, 1, X * Y).view(1, 1, X, Y)
    curved = random_intensity_curve(ramp, _gen(0), nonmonotonic_probability=0.0)
    assert (curved.flatten().diff() >= 0).all()
    assert curved.flatten()[-1] == pytest.approx(1.0)


def test_zero_strength_leaves_images_alone():
    unit = _unit()
    assert torch.equal(random_gamma(unit, _gen(0), log_std=0.0), unit)
    torch.testing.assert_close(random_bias_field(unit, _gen(0), max_log_std=0.0), unit)
    torch.testing.assert_close(random_blur(unit, _gen(0), max_sigma_px=0.0), unit)
    assert torch.equal(random_noise(unit, _gen(0), max_std=0.0), unit)


def test_blur_along_one_axis_keeps_the_other_untouched():
    """A line along Y (one X) stays as it is under blur along Y only and spreads along X
    under blur along X; either way it stays constant along Y and keeps its mass."""
    line = torch.zeros(1, 1, X, Y)
    line[:, 0, X // 2] = 1.0
    untouched = set()
    for seed in range(20):
        out = random_blur(line, _gen(seed), thick_slice_probability=1.0)
        assert out.sum() == pytest.approx(float(Y), rel=1e-4)
        torch.testing.assert_close(out, out[..., :1].expand_as(out))
        untouched.add(torch.allclose(out, line, atol=1e-6))
    assert untouched == {True, False}


def test_restored_images_match_the_original_foreground_statistics_and_range():
    images, _ = _batch()
    out = augment_contrast(images, _gen(0), AugmentConfig(intensity=True))
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    assert (out >= lo).all() and (out <= hi).all()
    foreground = images > lo
    for i in range(B):
        fg = foreground[i]
        # the clipping moves them a little; the scale stays that of the network input
        assert out[i][fg].mean() == pytest.approx(images[i][fg].mean().item(), abs=0.3)
        assert out[i][fg].std() == pytest.approx(images[i][fg].std().item(), rel=0.5)
    flat = torch.full((1, 1, 4, 4), -1.5)
    assert torch.equal(restore_normalisation(torch.rand(1, 1, 4, 4), flat), flat)


def test_presets():
    assert PRESETS == ("none", "geometric", "contrast")
    none, geometric, contrast = (AugmentConfig.preset(p) for p in PRESETS)
    assert none.flip_probability == 0.5 and none.max_rotation_deg == 0
    assert none.scale_range == (1.0, 1.0) and not none.intensity
    assert geometric.max_rotation_deg == 10.0 and geometric.scale_range == (0.9, 1.1)
    assert not geometric.intensity and contrast.intensity
    assert asdict(contrast) == {**asdict(geometric), "intensity": True}
    assert AugmentConfig.preset("contrast", max_noise_std=0.0).max_noise_std == 0.0
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig.preset("heavy")


def test_augmenter_is_deterministic_per_seed_and_advances_between_calls():
    images, labels = _batch()
    config = AugmentConfig.preset("contrast")
    a, b = Augmenter(config, seed=7), Augmenter(config, seed=7)
    first_a, first_b = a(images, labels), b(images, labels)
    assert all(torch.equal(p, q) for p, q in zip(first_a, first_b, strict=True))
    second_a = a(images, labels)
    assert not torch.equal(first_a[0], second_a[0])
    other = Augmenter(config, seed=8)(images, labels)
    assert not torch.equal(first_a[0], other[0])


def test_bad_shapes_are_refused():
    images, labels = _batch()
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y\)"):
        random_gamma(images[:, 0], _gen(0))
    with pytest.raises(ValueError, match="labels must be"):
        random_flip(images, labels[:, :-1], _gen(0))


def test_tissue_contrast_gives_each_tissue_its_drawn_mean_and_keeps_background():
    unit, labels = _unit(), _batch()[1]
    out = random_tissue_contrast(unit, labels, _gen(4), probability=1.0)
    background = labels.unsqueeze(1) == 0
    assert torch.equal(out[background], unit[background])
    # by hand: the same draws in the same order (per image: chosen, means, scale)
    g = _gen(4)
    for i in range(B):
        torch.rand(1, generator=g)
        means = 0.05 + 0.95 * torch.rand(3, generator=g)
        scale = float(0.5 + torch.rand(1, generator=g))
        for k in (1, 2):
            inside = labels[i] == k
            x = unit[i, 0][inside]
            expected = (float(means[k]) + scale * (x - x.mean())).clamp(0, 1)
            assert torch.allclose(out[i, 0][inside], expected, atol=1e-6)


def test_tissue_contrast_can_reorder_tissues_and_probability_zero_changes_nothing():
    unit, labels = _unit(), _batch()[1]
    assert torch.equal(random_tissue_contrast(unit, labels, _gen(0), probability=0.0), unit)
    reordered = 0
    for seed in range(20):
        out = random_tissue_contrast(unit, labels, _gen(seed), probability=1.0)
        for i in range(B):
            outer = out[i, 0][labels[i] == 1].mean()
            inner = out[i, 0][labels[i] == 2].mean()
            reordered += int(outer > inner)     # in the input the inner disc is brighter
    assert 0 < reordered < 20 * B
