"""SimpleITK co-registration (ddm's alignment) and the Volume <-> SimpleITK conversion."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from uda_core.errors import InputError
from uda_core.grid.coregister import align_affine, sitk_to_volume, volume_to_sitk
from uda_core.io import Volume
from uda_core.io.readers import read_volume


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation about `axis` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.deg2rad(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def oblique_affine(spacing=(1.2, 0.9, 3.0), degrees=20.0, flip_x=True) -> np.ndarray:
    """An oblique, anisotropic, optionally left-right flipped voxel -> RAS affine."""
    matrix = rotation((1, 2, 3), degrees) @ np.diag(spacing)
    if flip_x:
        matrix[:, 0] *= -1
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = (10.5, -20.25, 33.0)
    return affine


def world_points(shape, affine) -> np.ndarray:
    """RAS mm of every voxel centre, (X, Y, Z, 3)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def phantom(points: np.ndarray, t1: bool = False) -> np.ndarray:
    """A smooth asymmetric head-like object at world points (..., 3) mm: an ellipsoid with an
    off-centre ball inside. T2-like: ball brighter than the ellipsoid; T1-like (`t1`): tissue
    contrast inverted (ball darker); the background is dark in both, as in MRI."""
    ellipsoid = np.sqrt(((points / (22.0, 15.0, 11.0)) ** 2).sum(-1))
    body = 1.0 / (1.0 + np.exp((ellipsoid - 1.0) * 12.0))
    ball = np.exp(-(((points - (7.0, 4.0, 2.0)) ** 2).sum(-1)) / (2 * 3.0**2))
    tissue = 90.0 * body - 60.0 * ball if t1 else 50.0 * body + 60.0 * ball
    return (10.0 + tissue).astype(np.float32)


def centroid(volume: Volume, mask: np.ndarray) -> np.ndarray:
    return world_points(volume.shape, volume.affine)[mask].mean(axis=0)


def abs_ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(abs((a * b).sum()) / np.sqrt((a * a).sum() * (b * b).sum()))


def test_round_trip_keeps_oblique_flipped_grid_and_voxels():
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(size=(5, 6, 7)).astype(np.float32), oblique_affine())
    image = volume_to_sitk(volume)
    assert image.GetSize() == (5, 6, 7)
    back = sitk_to_volume(image)
    np.testing.assert_array_equal(back.data, volume.data)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-9)
    # Same world point for the same voxel: ITK (LPS) vs the Volume's affine (RAS).
    lps = np.array(image.TransformIndexToPhysicalPoint((4, 1, 6)))
    ras = volume.affine @ np.array([4, 1, 6, 1.0])
    np.testing.assert_allclose(lps * (-1, -1, 1), ras[:3], atol=1e-9)
    assert image.GetPixel(4, 1, 6) == pytest.approx(float(volume.data[4, 1, 6]))


def test_conversion_agrees_with_the_file_reader(tmp_path):
    volume = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), oblique_affine())
    path = tmp_path / "oblique.mha"
    sitk.WriteImage(volume_to_sitk(volume), str(path))
    read = read_volume(path)
    np.testing.assert_array_equal(read.data, volume.data)
    np.testing.assert_allclose(read.affine, volume.affine, atol=1e-5)


def test_sheared_affine_is_refused():
    affine = np.eye(4)
    affine[0, 1] = 0.5
    with pytest.raises(InputError, match="sheared"):
        volume_to_sitk(Volume(np.zeros((3, 3, 3), np.float32), affine, source="x.nii"))


def test_align_affine_recovers_shift_and_rotation_across_contrasts():
    fixed_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed_affine[:3, 3] = -39.0  # 40^3 voxels at 2 mm centred on the world origin
    fixed = Volume(phantom(world_points((40, 40, 40), fixed_affine)), fixed_affine)
    # The subject moved 6 mm and turned 5 degrees; the moving image has its own oblique grid
    # at 2.5 mm and inverted tissue contrast (T1 vs T2).
    turn = rotation((0.3, -0.2, 1.0), 5.0)
    shift = 6.0 * np.array([0.6, -0.64, 0.48])
    moving_affine = oblique_affine(spacing=(2.5, 2.5, 2.5), degrees=8.0, flip_x=False)
    moving_affine[:3, 3] = 0
    moving_affine[:3, 3] = -moving_affine[:3, :3] @ np.full(3, 16.0)  # centred, 33^3 voxels
    points = world_points((33, 33, 33), moving_affine)
    moving = Volume(phantom((points - shift) @ turn, t1=True), moving_affine, source="t1.nii")

    aligned = align_affine(fixed, moving, iterations=100)

    assert aligned.shape == fixed.shape
    np.testing.assert_array_equal(aligned.affine, fixed.affine)
    assert aligned.data.dtype == np.float32 and aligned.source == "t1.nii"
    assert aligned.meta["registration"]["fixed_to_moving_ras"].shape == (4, 4)
    # Before: the moving image taken at the same world points (no registration).
    from uda_core.io.geometry import resample
    naive = resample(moving.data, moving.affine, fixed.affine, fixed.shape, order=1,
                     fill=float(moving.data.min()))
    before, after = abs_ncc(naive, fixed.data), abs_ncc(aligned.data, fixed.data)
    assert after > 0.97 and after - before > 0.1, (before, after)  # ideal 0.981
    target = centroid(fixed, fixed.data > 35)
    error_before = np.linalg.norm(centroid(fixed, naive > 35) - target)
    error_after = np.linalg.norm(centroid(aligned, aligned.data > 35) - target)
    assert error_before > 4.0
    assert error_after < 1.0, error_after
    # Fixed seed: the same answer twice.
    again = align_affine(fixed, moving, iterations=100)
    np.testing.assert_allclose(again.data, aligned.data, atol=1e-4)
