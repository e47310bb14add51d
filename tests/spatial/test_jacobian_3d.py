import numpy as np
import pytest

from uda_core.spatial.jacobian_3d import jacobian_determinant_mm


def _oblique_affine():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.5, 2.0])
    affine[:3, 3] = (-10, 5, 3)
    return affine


def _world_points(affine, shape):
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def test_a_linear_field_has_the_determinant_of_its_matrix_everywhere():
    affine, shape = _oblique_affine(), (9, 7, 6)
    matrix = np.array([[0.2, 0.05, 0.0], [0.0, -0.1, 0.03], [0.01, 0.0, 0.3]])  # u = M p
    field = _world_points(affine, shape) @ matrix.T
    det = jacobian_determinant_mm(field, affine, slab=2)
    assert det.shape == shape and det.dtype == np.float32
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + matrix), rtol=1e-5)


def test_identity_is_one_folding_is_negative_and_slabs_do_not_matter():
    affine, shape = _oblique_affine(), (11, 5, 4)
    np.testing.assert_allclose(jacobian_determinant_mm(np.zeros((*shape, 3)), affine), 1.0)
    points = _world_points(affine, shape)
    flip = np.zeros((*shape, 3))
    flip[..., 2] = -2.0 * points[..., 2]           # p_z -> -p_z: det -1, a fold
    np.testing.assert_allclose(jacobian_determinant_mm(flip, affine), -1.0, atol=1e-6)
    rng = np.random.default_rng(0)
    wavy = rng.normal(size=(*shape, 3))
    whole = jacobian_determinant_mm(wavy, affine, slab=100)
    for slab in (1, 3, 4):
        np.testing.assert_allclose(jacobian_determinant_mm(wavy, affine, slab=slab), whole,
                                   rtol=1e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="X, Y, Z, 3"):
        jacobian_determinant_mm(np.zeros((4, 4, 4)), np.eye(4))
    with pytest.raises(ValueError, match="2 voxels"):
        jacobian_determinant_mm(np.zeros((4, 1, 4, 3)), np.eye(4))
