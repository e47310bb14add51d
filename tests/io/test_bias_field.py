"""N4 bias-field correction (uda_core.io.bias_field) on small synthetic heads."""

from __future__ import annotations

import numpy as np
import pytest

from uda_core.io.bias_field import correct_bias_field


def _two_tissue_head(shape=(36, 40, 36)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ball (tissue 1, value 100) with a core (tissue 2, value 200) in dark air, and a
    smooth field exp(0.4 * ramp) along the first axis: (biased image, tissue labels, field)."""
    z, x, y = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    radius = np.sqrt(z ** 2 + x ** 2 + y ** 2)
    labels = np.where(radius < 0.45, 2, np.where(radius < 0.85, 1, 0))
    clean = np.choose(labels, [2.0, 100.0, 200.0]).astype(np.float32)
    field = np.exp(0.4 * z + 0.2 * x * y).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 2.0, shape).astype(np.float32)
    return clean * field + noise, labels, field


def _spread(image: np.ndarray, labels: np.ndarray, tissue: int) -> float:
    """Coefficient of variation of one tissue."""
    inside = image[labels == tissue]
    return float(inside.std() / inside.mean())


def test_the_smooth_field_is_removed_and_the_contrast_kept():
    biased, labels, _ = _two_tissue_head()
    corrected = correct_bias_field(biased, (2.0, 2.0, 2.0))
    assert corrected.shape == biased.shape and corrected.dtype == np.float32
    for tissue in (1, 2):
        assert _spread(corrected, labels, tissue) < 0.4 * _spread(biased, labels, tissue)
    ratio = corrected[labels == 2].mean() / corrected[labels == 1].mean()
    assert ratio == pytest.approx(2.0, rel=0.1)


def test_anisotropic_spacing_is_accepted_in_array_order():
    biased, labels, _ = _two_tissue_head((18, 40, 36))
    corrected = correct_bias_field(biased, (4.0, 2.0, 2.0))
    assert _spread(corrected, labels, 1) < 0.5 * _spread(biased, labels, 1)


def test_an_image_with_nothing_to_fit_comes_back_unchanged():
    empty = np.zeros((10, 10, 10), dtype=np.float32)
    assert np.array_equal(correct_bias_field(empty, (1.0, 1.0, 1.0)), empty)
    with pytest.raises(ValueError, match="3D image"):
        correct_bias_field(np.ones((4, 4)), (1.0, 1.0))
