"""Tests for uda_core.spatial.warp: warping conventions, Jacobians, labels (tiny, fast)."""

from __future__ import annotations

import pytest
import torch

from uda_core.spatial.warp import (
    DisplacementGrid,
    compose_displacements,
    control_point_coordinates,
    dense_from_control,
    dense_to_control,
    expected_displacement,
    folding_fraction,
    identity_displacement,
    jacobian_determinant,
    label_to_displacement,
    pixel_coordinates,
    quantise,
    warp_image,
)

H, W = 20, 24


def _image(seed: int = 0, channels: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, H, W, generator=g)


def _constant(dy: float, dx: float, batch: int = 2, shape=(H, W)) -> torch.Tensor:
    disp = identity_displacement(batch, shape)
    disp[:, 0] = dy
    disp[:, 1] = dx
    return disp


# ----------------------------------------------------------------------------- warping


def test_identity_warp():
    image = _image(channels=3)
    zero = identity_displacement(2, (H, W))
    # bilinear: exact up to float32 rounding of grid_sample's coordinate normalisation
    torch.testing.assert_close(warp_image(image, zero), image, atol=1e-5, rtol=0)
    assert torch.equal(warp_image(image, zero, mode="nearest"), image)


def test_constant_shift_direction_and_back():
    image = _image()
    warped = warp_image(image, _constant(2.0, -3.0))
    # warped(y, x) = moving(y + 2, x - 3)
    torch.testing.assert_close(warped[..., : H - 2, 3:], image[..., 2:, : W - 3],
                               atol=1e-5, rtol=0)
    back = warp_image(warped, _constant(-2.0, 3.0))
    torch.testing.assert_close(back[..., 2 : H - 2, 3 : W - 3], image[..., 2 : H - 2, 3 : W - 3],
                               atol=1e-5, rtol=0)


def test_fractional_shift_of_linear_ramp_is_exact_in_interior():
    coords = pixel_coordinates((H, W))
    ramp = (0.5 * coords[0] + 2.0 * coords[1]).expand(2, 1, H, W)  # 0.5 per row, 2 per column
    warped = warp_image(ramp, _constant(0.25, -1.5))
    expected = ramp + 0.5 * 0.25 + 2.0 * (-1.5)
    torch.testing.assert_close(warped[..., :-1, 2:], expected[..., :-1, 2:], atol=1e-4, rtol=0)


def test_border_value_outside():
    image = _image()
    warped = warp_image(image, _constant(0.0, -100.0))
    torch.testing.assert_close(warped, image[..., :1].expand_as(image), atol=1e-5, rtol=0)


def test_nearest_warp_keeps_label_values_and_dtype():
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 2, 5])[torch.randint(0, 4, (2, 1, H, W), generator=g)]
    disp = 2.5 * torch.randn(2, 2, H, W, generator=g)
    warped = warp_image(labels, disp, mode="nearest")
    assert warped.dtype == labels.dtype and warped.shape == labels.shape
    assert set(warped.unique().tolist()) <= {0, 1, 2, 5}
    with pytest.raises(TypeError):
        warp_image(labels, disp)  # bilinear needs floats


def test_warp_rejects_bad_shapes_and_mode():
    image = _image()
    with pytest.raises(ValueError):
        warp_image(image, identity_displacement(2, (H, W + 1)))
    with pytest.raises(ValueError):
        warp_image(image, identity_displacement(2, (H, W)), mode="bicubic")


def test_warp_is_differentiable_in_displacement():
    coords = pixel_coordinates((H, W))
    ramp = coords[1].expand(1, 1, H, W).clone()
    disp = torch.full((1, 2, H, W), 0.3, requires_grad=True)
    warp_image(ramp, disp)[..., 2:-2, 2:-2].sum().backward()
    assert disp.grad[:, 1, 2:-2, 2:-2].abs().min() > 0.5  # d(ramp)/dx = 1


def test_compose_constant_shifts():
    first, second = _constant(1.0, 0.0), _constant(0.0, 2.0)
    torch.testing.assert_close(compose_displacements(first, second), _constant(1.0, 2.0))
    zero = compose_displacements(first, -first)
    torch.testing.assert_close(zero, torch.zeros_like(zero))
    image = _image()
    twice = warp_image(warp_image(image, second), first)
    once = warp_image(image, compose_displacements(first, second))
    torch.testing.assert_close(once[..., : H - 1, : W - 2], twice[..., : H - 1, : W - 2],
                               atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- control points


def test_control_point_coordinates():
    points = control_point_coordinates((8, 12), 4)
    assert points.shape == (2, 2, 3)
    assert points[0, :, 0].tolist() == [1.5, 5.5]
    assert points[1, 0].tolist() == [1.5, 5.5, 9.5]


def test_dense_from_control_constant_stays_constant():
    cp = _constant(1.5, -2.0, shape=(H // 4, W // 4))
    for sigma in (0.0, 4.0):
        dense = dense_from_control(cp, (H, W), 4, sigma)
        assert dense.shape == (2, 2, H, W)
        torch.testing.assert_close(dense, _constant(1.5, -2.0), atol=1e-5, rtol=0)
    odd = dense_from_control(_constant(1.0, 1.0, shape=(2, 3)), (9, 13), 4, 2.0)
    assert odd.shape == (2, 2, 9, 13)  # H, W need not be multiples of the stride


def test_dense_from_control_places_points_at_block_centres():
    kh, kw, stride = 5, 6, 4
    index = pixel_coordinates((kh, kw))
    cp = torch.stack((0.3 * index[0], -0.2 * index[1] + 0.1 * index[0])).unsqueeze(0)
    dense = dense_from_control(cp, (kh * stride, kw * stride), stride)
    # a field linear in the control-point index comes back exactly at the control points
    back = dense_to_control(dense, stride)
    torch.testing.assert_close(back[..., 1:-1, 1:-1], cp[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        dense_from_control(cp, (kh * stride + 4, kw * stride), stride)


# ----------------------------------------------------------------------------- jacobian


def test_jacobian_of_identity_is_one():
    det = jacobian_determinant(identity_displacement(2, (H, W)))
    assert det.shape == (2, H - 1, W - 1)
    torch.testing.assert_close(det, torch.ones_like(det))
    assert folding_fraction(identity_displacement(2, (H, W))) == 0.0


def test_jacobian_of_affine_field():
    coords = pixel_coordinates((H, W))
    # u_y = 0.1 y + 0.2 x, u_x = 0.3 y - 0.1 x  ->  det = 1.1 * 0.9 - 0.2 * 0.3 = 0.93
    disp = torch.stack((0.1 * coords[0] + 0.2 * coords[1], 0.3 * coords[0] - 0.1 * coords[1]))
    det = jacobian_determinant(disp.unsqueeze(0))
    torch.testing.assert_close(det, torch.full_like(det, 0.93), atol=1e-5, rtol=0)


def test_jacobian_of_folding_field_is_negative():
    coords = pixel_coordinates((H, W))
    disp = torch.zeros(1, 2, H, W)
    disp[:, 1] = -2.0 * coords[1]  # x -> -x: a mirror, det = -1
    det = jacobian_determinant(disp)
    torch.testing.assert_close(det, -torch.ones_like(det))
    assert folding_fraction(disp) == 1.0
    local = identity_displacement(1, (H, W))
    local[:, 1, 5, 10] = -3.0  # pixel (5, 10) jumps past its left neighbour
    assert 0.0 < folding_fraction(local) < 0.05


# ----------------------------------------------------------------------------- labels


def test_displacement_grid_properties():
    grid = DisplacementGrid(6.0, 13)
    assert grid.n_labels == 169 and grid.shape == (13, 13)
    assert grid.step_px == pytest.approx(1.0)
    cand = grid.candidates
    assert cand.shape == (169, 2)
    assert cand[0].tolist() == [-6.0, -6.0]
    assert cand[1].tolist() == [-6.0, -5.0]  # label iy * n + ix: ix (dx) varies fastest
    assert cand[13].tolist() == [-5.0, -6.0]
    assert cand[grid.centre_label].tolist() == [0.0, 0.0]
    for bad in ((6.0, 12), (6.0, 1), (0.0, 11), (-1.0, 11)):
        with pytest.raises(ValueError):
            DisplacementGrid(*bad)


def test_quantise_round_trip():
    grid = DisplacementGrid(6.0, 11)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, grid.n_labels, (2, 4, 5), generator=g)
    disp = label_to_displacement(labels, grid)
    assert disp.shape == (2, 2, 4, 5) and disp.dtype == torch.float32
    assert torch.equal(quantise(disp, grid), labels)
    jitter = (torch.rand(disp.shape, generator=g) - 0.5) * 0.9 * grid.step_px
    assert torch.equal(quantise(disp + jitter, grid), labels)
    far = quantise(torch.tensor([[[100.0], [-100.0]]]), grid)  # (1, 2, 1): clamped
    assert far.tolist() == [[(grid.n_per_axis - 1) * grid.n_per_axis]]
    with pytest.raises(ValueError):
        label_to_displacement(torch.tensor([[grid.n_labels]]), grid)


def test_expected_displacement():
    grid = DisplacementGrid(2.0, 5)
    probs = torch.zeros(1, grid.n_labels, 1, 1)
    probs[0, 0] = 0.5  # (-2, -2)
    probs[0, grid.centre_label + 1] = 0.5  # (0, 1)
    torch.testing.assert_close(expected_displacement(probs, grid).flatten(),
                               torch.tensor([-1.0, -0.5]))


def test_dense_from_control_equals_grid_sample_then_gaussian():
    """The separable-matrix form equals bilinear grid_sample upsampling + Gaussian."""
    import torch.nn.functional as F

    from uda_core.spatial import warp

    for shape, stride, sigma in (((96, 112), 4, 4.0), ((32, 36), 4, 0.0), ((8, 12), 4, 30.0),
                                 ((16, 8), 1, 2.0)):
        height, width = shape
        disp_cp = torch.randn(3, 2, height // stride, width // stride, dtype=torch.float64)
        index = (warp.pixel_coordinates(shape, dtype=torch.float64) + 0.5) / stride - 0.5
        grid = torch.stack((warp._normalise(index[1], width // stride),
                            warp._normalise(index[0], height // stride)), dim=-1)
        upsampled = F.grid_sample(disp_cp, grid.expand(3, -1, -1, -1), mode="bilinear",
                                  padding_mode="border", align_corners=True)
        torch.testing.assert_close(warp.dense_from_control(disp_cp, shape, stride, sigma),
                                   warp.gaussian_smooth(upsampled, sigma))


@pytest.mark.parametrize("sigma, shape", [(0.8, (2, 6, 9, 11)), (4.0, (1, 2, 24, 28)),
                                          (2.0, (1, 1, 3, 4))])
def test_gaussian_smooth_equals_a_depthwise_convolution_with_replicated_edges(sigma, shape):
    from uda_core.spatial import warp

    field = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    field.requires_grad_()
    kernel = warp._gaussian_kernel(sigma, torch.float64, None)
    radius, channels = kernel.numel() // 2, shape[1]
    reference = torch.nn.functional.pad(field, (0, 0, radius, radius), mode="replicate")
    reference = torch.nn.functional.conv2d(
        reference, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    reference = torch.nn.functional.pad(reference, (radius, radius, 0, 0), mode="replicate")
    reference = torch.nn.functional.conv2d(
        reference, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    smoothed = warp.gaussian_smooth(field, sigma)
    torch.testing.assert_close(smoothed, reference)
    weights = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad((smoothed * weights).sum(), field)[0],
                               torch.autograd.grad((reference * weights).sum(), field)[0])
