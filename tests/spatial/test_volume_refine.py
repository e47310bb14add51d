"""The 3D refinement of a whole-volume registration (uda_core.spatial.volume_refine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uda_core.spatial.mind import MIND_CHANNELS_3D, mind_ssc_3d
from uda_core.spatial.volume_refine import VolumeRefinement, compose_residual, refine_residual


def blobs(shape=(20, 22, 24), shift_z: float = 0.0) -> np.ndarray:
    """Two smooth blobs and a bright slab, shifted along the last axis by ``shift_z``."""
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    z = z - shift_z
    data = (np.exp(-((x - 7) ** 2 + (y - 9) ** 2 + (z - 9) ** 2) / 12.0)
            + 0.8 * np.exp(-((x - 13) ** 2 + (y - 13) ** 2 + (z - 15) ** 2) / 8.0)
            + 0.5 / (1 + np.exp(-(z - 12))))
    return (100 * data).astype(np.float32)


def test_mind_3d_has_twelve_channels_and_ignores_linear_intensity_maps():
    volume = torch.from_numpy(blobs())[None, None]
    mind = mind_ssc_3d(volume)
    assert mind.shape == (1, MIND_CHANNELS_3D, *volume.shape[-3:]) and MIND_CHANNELS_3D == 12
    assert float(mind.min()) > 0 and float(mind.max()) <= 1 + 1e-6
    torch.testing.assert_close(mind_ssc_3d(3 * volume + 7), mind, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        mind_ssc_3d(volume[0])


def test_refinement_recovers_a_shift_across_slices():
    fixed = blobs()
    warped = blobs(shift_z=2.0)          # warped(p) = fixed(p - 2 e_z): r should be +2 e_z
    settings = VolumeRefinement(iterations=60, lr=0.3, smooth_weight=0.01, stride=2,
                                working_mm=1.0)
    residual = refine_residual(fixed, warped, (1.0, 1.0, 1.0), settings)
    assert residual.shape == (3, *fixed.shape) and residual.dtype == np.float32
    inside = fixed > 40
    assert abs(float(residual[2][inside].mean()) - 2.0) < 0.6
    assert float(np.abs(residual[:2][:, inside]).mean()) < 0.6
    zero = refine_residual(fixed, warped, (1.0, 1.0, 1.0), VolumeRefinement(iterations=0))
    assert not zero.any()


def test_working_grid_residual_is_in_the_input_voxels():
    fixed, warped = blobs(), blobs(shift_z=2.0)
    settings = VolumeRefinement(iterations=60, lr=0.3, smooth_weight=0.01, stride=1,
                                working_mm=2.0)                     # factor 2 per axis
    residual = refine_residual(fixed, warped, (1.0, 1.0, 1.0), settings)
    assert residual.shape == (3, *fixed.shape)
    assert abs(float(residual[2][fixed > 40].mean()) - 2.0) < 0.8


def test_compose_residual():
    shape = (4, 5, 6)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    field = np.random.default_rng(0).normal(size=(*shape, 3)).astype(np.float32)
    zero = np.zeros((3, *shape), np.float32)
    np.testing.assert_allclose(compose_residual(field, zero, affine), field, atol=1e-6)
    step = np.zeros((3, *shape), np.float32)
    step[2] = 1.0                                   # one voxel along the third axis
    flat = np.zeros((*shape, 3), np.float32)
    composed = compose_residual(flat, step, affine)
    np.testing.assert_allclose(composed[..., 2], 3.0) and np.testing.assert_allclose(
        composed[..., :2], 0.0)
    # u'(p) = r_mm(p) + u(p + r): a field varying along the third axis is read one voxel on
    ramp = np.zeros((*shape, 3), np.float32)
    ramp[..., 0] = np.arange(shape[2], dtype=np.float32)
    composed = compose_residual(ramp, step, affine)
    np.testing.assert_allclose(composed[:, :, :-1, 0], ramp[:, :, 1:, 0])


def test_settings_are_checked():
    with pytest.raises(ValueError):
        VolumeRefinement(iterations=-1)
    with pytest.raises(ValueError):
        VolumeRefinement(stride=0)
    with pytest.raises(ValueError):
        refine_residual(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1))
