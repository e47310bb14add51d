"""The classical anchor: SimpleITK B-spline (Mattes MI) registration of one 2D pair."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from uda_core.spatial.fields import make_pairs, warp_slice
from uda_core.spatial.sitk_bspline import register_bspline_2d

INNER = (slice(None), slice(6, -6), slice(6, -6))  # (2, H, W) fields away from the edges


@pytest.fixture(autouse=True)
def one_thread():
    """One SimpleITK thread (small images; the test machine is shared)."""
    before = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(before)


def blob_image(n: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth Gaussian blobs of both signs, rescaled to 0..1: (n, n) float32."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    image = np.zeros((n, n))
    for _ in range(16):
        cy, cx = rng.uniform(4, n - 4, 2)
        sigma = rng.uniform(3.0, 7.0)
        image += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5) * np.exp(
            -((y - cy)**2 + (x - cx)**2) / (2 * sigma**2))
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def endpoint_error(disp: np.ndarray, truth: np.ndarray) -> float:
    """Mean length (pixels) of disp - truth over the inner pixels."""
    return float(np.sqrt(((disp - truth)[INNER] ** 2).sum(axis=0)).mean())


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def pair():
    image = blob_image()
    pairs = make_pairs(image[None], None, np.random.default_rng(0), max_px=4.0, smooth_px=10.0)
    return image, pairs["moving"][0, 0].numpy(), pairs["disp"][0].numpy()


def test_registration_recovers_a_known_smooth_deformation(pair):
    fixed, moving, truth = pair
    warped, disp, seconds = register_bspline_2d(fixed, moving, threads=1)
    assert warped.shape == fixed.shape and warped.dtype == np.float32
    assert disp.shape == (2, *fixed.shape) and disp.dtype == np.float32
    assert 0.0 < seconds < 30.0
    before = endpoint_error(np.zeros_like(truth), truth)
    after = endpoint_error(disp, truth)
    assert before > 1.0 and after < 0.5 * before
    assert correlation(warped, fixed) > correlation(moving, fixed)
    # The returned field is the transform: warping with it reproduces ITK's resampling.
    assert np.abs(warp_slice(moving, disp) - warped)[6:-6, 6:-6].max() < 1e-3


def test_registration_across_contrasts(pair):
    fixed, moving, truth = pair
    other = 1.0 - moving**2  # a different, non-linear contrast: mutual information copes
    _, disp, _ = register_bspline_2d(fixed, other, threads=1)
    assert endpoint_error(disp, truth) < 0.5 * endpoint_error(np.zeros_like(truth), truth)


def test_displacement_convention_is_dy_dx_in_pixels():
    fixed = blob_image(seed=1)
    shift = np.zeros((2, *fixed.shape), np.float32)
    shift[0] = -3.0
    moving = warp_slice(fixed, shift)  # moving(y, x) = fixed(y - 3, x): content moved down 3
    # so warped(y, x) = moving(y + 3, x) = fixed(y, x): the answer is dy = +3, dx = 0 (pixels,
    # whatever the pixel spacing in mm).
    _, disp, _ = register_bspline_2d(fixed, moving, spacing=(1.5, 2.5), threads=1)
    inner = disp[INNER]
    assert abs(float(np.median(inner[0])) - 3.0) < 0.3
    assert abs(float(np.median(inner[1]))) < 0.3


def test_same_seed_same_result_and_bad_arguments(pair):
    fixed, moving, _ = pair
    _, first, _ = register_bspline_2d(fixed, moving, iterations=5, seed=3, threads=1)
    _, second, _ = register_bspline_2d(fixed, moving, iterations=5, seed=3, threads=1)
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="seed"):
        register_bspline_2d(fixed, moving, seed=0)
    with pytest.raises(ValueError, match="sampling"):
        register_bspline_2d(fixed, moving, sampling=0.0)
    with pytest.raises(ValueError):
        register_bspline_2d(fixed, moving[:, :-1])
