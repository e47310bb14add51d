"""Registration pictures (uda_core.exports.overlay): checkerboard, blend, arrows, grid,
folds."""

from __future__ import annotations

import numpy as np
import pytest

from uda_core.exports.overlay import (
    blend,
    checkerboard,
    deformation_grid_lines,
    displacement_arrows,
    fold_mask,
    robust_unit,
    slice_axis,
)

AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, 20], [0, 0, 3.0, 5], [0, 0, 0, 1]])


def test_robust_unit_maps_percentiles_to_0_and_1():
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    unit = robust_unit(image)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    assert np.all(robust_unit(np.full((3, 3, 3), 7.0)) == 0)


def test_checkerboard_alternates_tiles():
    rng = np.random.default_rng(0)
    a = rng.normal(100, 20, (8, 6, 3))
    b = rng.normal(-5, 1, (8, 6, 3))
    board = checkerboard(a, b, tile_vox=2, axes=(0, 1))
    assert board.shape == a.shape and board.dtype == np.float32
    # 1 where b: tiles of 2 voxels alternate along x and along y, every slice alike
    from_b = (np.arange(8)[:, None] // 2 + np.arange(6)[None, :] // 2) % 2 == 1
    expected = np.where(from_b[:, :, None], robust_unit(b), robust_unit(a))
    np.testing.assert_array_equal(board, expected)
    assert from_b[2, 0] and not from_b[2, 2] and not from_b[0, 1]
    along_z = checkerboard(a, b, tile_vox=1, axes=(2,))
    np.testing.assert_array_equal(along_z[:, :, 1], robust_unit(b)[:, :, 1])
    np.testing.assert_array_equal(along_z[:, :, 2], robust_unit(a)[:, :, 2])


def test_checkerboard_and_blend_check_their_inputs():
    with pytest.raises(ValueError, match="one grid"):
        checkerboard(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="tile_vox"):
        checkerboard(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), tile_vox=0)
    with pytest.raises(ValueError, match="alpha"):
        blend(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), 1.5)


def test_blend_mixes_the_rescaled_images():
    a = np.linspace(0, 10, 1000).reshape(10, 10, 10)
    mixed = blend(a, 100 - 10 * a, alpha=0.25)
    np.testing.assert_allclose(mixed, 0.75 * robust_unit(a) + 0.25 * robust_unit(-a), atol=1e-6)


def test_fold_mask_marks_non_positive_determinants():
    jacobian = np.array([[[1.2, 0.0], [-0.5, 0.01]]])
    mask = fold_mask(jacobian)
    assert mask.dtype == np.uint8 and mask.tolist() == [[[0, 1], [1, 0]]]


def test_slice_axis_follows_the_axis_closest_to_superior():
    assert slice_axis(AFFINE) == 2
    sagittal = np.array([[0, 0, -1.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    assert slice_axis(sagittal) == 1


def test_arrows_of_a_constant_field_all_equal_it():
    field = np.zeros((9, 10, 4, 3))
    field[...] = (1.5, -0.5, 0.0)
    arrows = displacement_arrows(field, AFFINE, step_vox=(4, 4, 1))
    assert arrows.shape == (2 * 2 * 4, 2, 3)  # x 2, 6; y 2, 6; z 0..3
    np.testing.assert_allclose(arrows[:, 1], np.tile([1.5, -0.5, 0.0], (len(arrows), 1)))
    starts = arrows[:, 0]
    np.testing.assert_allclose(np.unique(starts[:, 0]), [-10 + 2 * 2, -10 + 2 * 6])
    np.testing.assert_allclose(np.unique(starts[:, 2]), 5 + 3.0 * np.arange(4))


def test_arrows_leave_out_short_displacements():
    field = np.zeros((8, 8, 2, 3))
    field[6, 2, 0] = (0, 3.0, 0)   # lattice: x, y in {2, 6}; z (2 slices, step 4): 0
    field[6, 6, 0] = (0, 0.1, 0)   # too short
    arrows = displacement_arrows(field, AFFINE, step_vox=4, min_mm=0.2)
    assert arrows.shape == (1, 2, 3)
    np.testing.assert_allclose(arrows[0, 0], [-10 + 12, 20 + 4, 5])
    np.testing.assert_allclose(arrows[0, 1], [0, 3.0, 0])
    field[...] = (0, 1.0, 0)
    mask = np.zeros(field.shape[:3], bool)
    mask[2, 6, 0] = True
    masked = displacement_arrows(field, AFFINE, step_vox=4, mask=mask)
    assert masked.shape == (1, 2, 3)
    np.testing.assert_allclose(masked[0, 0], [-10 + 4, 20 + 12, 5])


def test_deformed_grid_of_a_zero_field_is_straight():
    field = np.zeros((9, 10, 4, 3))
    lines = deformation_grid_lines(field, AFFINE, spacing_vox=4, slice_index=2)
    # lines along x at y = 2, 6 and along y at x = 2, 6
    assert len(lines) == 4
    for line in lines:
        assert line.ndim == 2 and line.shape[1] == 3 and len(line) >= 2
        np.testing.assert_allclose(line[:, 2], 5 + 3.0 * 2)  # all on slice 2
        steps = np.diff(line, axis=0)
        # straight: every step is the same one-voxel step along x or along y
        np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape))
        assert np.isclose(np.linalg.norm(steps[0]), 2.0)
    assert {len(line) for line in lines} == {9, 10}
    assert len(deformation_grid_lines(field, AFFINE, spacing_vox=4)) == 4 * 4  # every slice


def test_deformed_grid_moves_with_the_field():
    field = np.zeros((9, 10, 4, 3))
    field[..., 1] = 1.0  # 1 mm anterior everywhere
    straight = deformation_grid_lines(np.zeros_like(field), AFFINE, 4, slice_index=[0, 3])
    moved = deformation_grid_lines(field, AFFINE, 4, slice_index=[0, 3])
    for a, b in zip(straight, moved, strict=True):
        np.testing.assert_allclose(b - a, np.broadcast_to([0, 1.0, 0], a.shape))
    with pytest.raises(ValueError, match="outside"):
        deformation_grid_lines(field, AFFINE, 4, slice_index=4)
    with pytest.raises(ValueError, match=r"\(X, Y, Z, 3\)"):
        deformation_grid_lines(field[..., :2], AFFINE)
