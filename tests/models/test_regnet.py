"""Tests for uda_core.models.nets.regnet.DiscreteRegNet (tiny inputs, CPU, fast)."""

from __future__ import annotations

import pytest
import torch

from uda_core.models.nets.regnet import DiscreteRegNet, cost_volume
from uda_core.spatial.warp import DisplacementGrid, quantise


def _pair(shape=(2, 1, 32, 40), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


@pytest.fixture(scope="module")
def net() -> DiscreteRegNet:
    torch.manual_seed(0)
    return DiscreteRegNet()


def test_output_shapes_and_probabilities(net):
    fixed, moving = _pair()
    out = net(fixed, moving)
    labels, kh, kw = net.grid.n_labels, 32 // 4, 40 // 4
    assert labels == 121
    for key in ("cost", "logits1", "logits2", "probs1", "probs2", "probs"):
        assert out[key].shape == (2, labels, kh, kw), key
    assert out["disp_cp"].shape == (2, 2, kh, kw)
    assert out["disp"].shape == (2, 2, 32, 40)
    probs = out["probs"]
    assert probs.min() >= 0
    torch.testing.assert_close(probs.sum(1), torch.ones(2, kh, kw))
    assert out["disp_cp"].abs().max() <= net.grid.radius_px + 1e-5
    assert not torch.allclose(out["logits1"], out["logits2"])  # heads start different


def test_identical_images_cost_peaks_at_zero_displacement(net):
    fixed, _ = _pair()
    cost = net(fixed, fixed)["cost"]
    centre = net.grid.centre_label
    assert cost[:, centre].abs().max() < 1e-5  # a perfect match costs 0
    assert (cost[:, centre] >= cost.amax(1) - 1e-6).all()
    # strict argmax away from the border (where outward candidates repeat the edge features)
    margin = 2  # radius 6 px = 1.5 control-point cells
    interior = cost[:, :, margin:-margin, margin:-margin]
    assert (interior.argmax(1) == centre).all()


def test_cost_volume_of_shifted_features():
    g = torch.Generator().manual_seed(3)
    feat = torch.nn.functional.normalize(torch.randn(1, 8, 6, 7, generator=g), dim=1)
    moved = torch.roll(feat, shifts=(1, -1), dims=(2, 3))  # moved(i, j) = feat(i - 1, j + 1)
    grid = DisplacementGrid(8.0, 5)  # candidates -8, -4, 0, 4, 8 px = -2..2 cells at stride 4
    cost = cost_volume(feat, moved, grid.candidates, stride=4)
    # fixed(k) = moved(k + (1, -1) cells) = moved(k + (4, -4) px)
    target = quantise(torch.tensor([4.0, -4.0]).view(1, 2, 1, 1), grid).item()
    assert (cost[0, :, 1:-2, 2:-1].argmax(0) == target).all()


def _sampled_cost_volume(feat_fixed, feat_moving, candidates_px, stride):
    """The definition: fM sampled at k + d / stride cells by grid_sample (border padding)."""
    batch, channels, kh, kw = feat_fixed.shape
    offsets = candidates_px.to(feat_fixed.dtype) / stride
    cell_y, cell_x = torch.meshgrid(torch.arange(kh, dtype=feat_fixed.dtype),
                                    torch.arange(kw, dtype=feat_fixed.dtype), indexing="ij")
    sample_y = cell_y.reshape(1, -1) + offsets[:, 0:1]
    sample_x = cell_x.reshape(1, -1) + offsets[:, 1:2]
    grid = torch.stack((sample_x * (2.0 / (kw - 1)) - 1.0, sample_y * (2.0 / (kh - 1)) - 1.0),
                       dim=-1).unsqueeze(0).expand(batch, -1, -1, -1)
    sampled = torch.nn.functional.grid_sample(feat_moving, grid, mode="bilinear",
                                              padding_mode="border", align_corners=True)
    fixed = feat_fixed.reshape(batch, channels, 1, kh * kw)
    return -((fixed - sampled) ** 2).mean(dim=1).reshape(batch, -1, kh, kw)


@pytest.mark.parametrize("radius_px, n_per_axis, stride", [(6.0, 11, 4), (3.0, 7, 2),
                                                            (10.0, 5, 4), (2.5, 3, 8)])
def test_cost_volume_equals_bilinear_sampling_and_its_gradients(radius_px, n_per_axis, stride):
    g = torch.Generator().manual_seed(5)
    grid = DisplacementGrid(radius_px, n_per_axis)
    fixed = torch.randn(2, 3, 6, 7, dtype=torch.float64, generator=g).requires_grad_()
    moving = torch.randn(2, 3, 6, 7, dtype=torch.float64, generator=g).requires_grad_()
    fast = cost_volume(fixed, moving, grid.candidates, stride)
    reference = _sampled_cost_volume(fixed, moving, grid.candidates, stride)
    torch.testing.assert_close(fast, reference)           # borders included
    weights = torch.randn(reference.shape, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad((fast * weights).sum(), (fixed, moving))
    expected = torch.autograd.grad((reference * weights).sum(), (fixed, moving))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_gradients_reach_generator_and_both_heads():
    torch.manual_seed(1)
    model = DiscreteRegNet(radius_px=3.0, n_per_axis=7, features=8, width=8)
    fixed, moving = _pair((2, 1, 16, 16))
    out = model(fixed, moving)
    target = torch.zeros(2, 4, 4, dtype=torch.long) + model.grid.centre_label
    loss = (torch.nn.functional.cross_entropy(out["logits1"], target)
            + torch.nn.functional.cross_entropy(out["logits2"], target)
            + out["disp"].pow(2).mean())
    loss.backward()
    for name, module in (("generator", model.generator), ("head1", model.head1),
                         ("head2", model.head2)):
        for pname, param in module.named_parameters():
            assert param.grad is not None, f"{name}.{pname}"
            assert torch.isfinite(param.grad).all(), f"{name}.{pname}"
        assert any(p.grad.abs().sum() > 0 for p in module.parameters()), name
    for param in model.head1.parameters():  # every head scalar is used
        assert param.grad.abs().sum() > 0


def test_heads_and_generator_parameters_are_disjoint(net):
    ids = {name: {id(p) for p in getattr(net, name).parameters()}
           for name in ("generator", "head1", "head2")}
    assert ids["head1"] and ids["head2"] and ids["generator"]
    assert not ids["head1"] & ids["head2"]
    assert not (ids["head1"] | ids["head2"]) & ids["generator"]
    assert ids["head1"] | ids["head2"] | ids["generator"] == {id(p) for p in net.parameters()}


def test_input_checks_and_config():
    model = DiscreteRegNet(grid=DisplacementGrid(3.0, 7), stride=2, features=8, width=8)
    assert model.grid.n_labels == 49
    out = model(*_pair((1, 1, 12, 10)))
    assert out["logits1"].shape == (1, 49, 6, 5) and out["disp"].shape == (1, 2, 12, 10)
    with pytest.raises(ValueError, match="multiples"):
        model(*_pair((1, 1, 12, 11)))
    with pytest.raises(ValueError):
        model(torch.rand(1, 1, 12, 10), torch.rand(1, 1, 12, 12))
    with pytest.raises(ValueError):
        DiscreteRegNet(stride=3)
    rebuilt = DiscreteRegNet(**model.config)
    assert rebuilt.grid == model.grid and rebuilt.stride == 2
    assert rebuilt.load_state_dict(model.state_dict()) is not None


def test_separable_pooling_equals_the_reference_pools():
    from uda_core.models.nets import regnet

    torch.manual_seed(0)
    energy = torch.randn(2, 7 * 7, 5, 6, dtype=torch.float64)
    batch, labels, kh, kw = energy.shape
    view = energy.permute(0, 2, 3, 1).reshape(-1, 1, 7, 7)  # the former path: tiny images
    view = regnet._replicate_pool(view, "min")
    view = regnet._replicate_pool(regnet._replicate_pool(view, "avg"), "avg")
    back = view.reshape(batch, kh, kw, labels).permute(0, 3, 1, 2)
    reference = regnet._replicate_pool(back, "avg")
    head = regnet.RegularisingHead(7, 4).double()
    torch.testing.assert_close(head._regularise(energy), reference)


def test_instance_optimisation_lowers_the_feature_cost_and_keeps_the_shapes():
    from uda_core.models.instance_optimisation import (
        InstanceOptimisation,
        RefinedRegNet,
        _sample_cells,
    )

    torch.manual_seed(0)
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=7, stride=4, features=8, width=8).eval()
    fixed = torch.rand(2, 1, 32, 36)
    moving = torch.roll(fixed, 2, dims=2)
    refined = RefinedRegNet(net, InstanceOptimisation(iterations=30, lr=0.3, smooth_weight=0,
                                                      similarity="features"))
    with torch.no_grad():
        plain = net(fixed, moving)
        feat_f, feat_m = net.feature_maps(fixed, moving)
    out = refined(fixed, moving)
    assert out["disp"].shape == plain["disp"].shape and out["probs"].shape == plain["probs"].shape
    before = (feat_f - _sample_cells(feat_m, plain["disp_cp"], 4)).pow(2).mean()
    after = (feat_f - _sample_cells(feat_m, out["disp_cp"], 4)).pow(2).mean()
    assert after < before
    none = RefinedRegNet(net, InstanceOptimisation(iterations=0))(fixed, moving)
    torch.testing.assert_close(none["disp"], plain["disp"])


def _mind_refinement_by_autograd(fixed, moving, start, stride, sigma, settings):
    """The MIND instance optimisation written with autograd and torch.optim.Adam."""
    from uda_core.models.instance_optimisation import smoothness
    from uda_core.spatial.mind import mind_ssc
    from uda_core.spatial.warp import dense_from_control, warp_image

    mind_f, mind_m = mind_ssc(fixed), mind_ssc(moving)
    field = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([field], lr=settings.lr)
    for _ in range(settings.iterations):
        optimiser.zero_grad()
        dense = dense_from_control(field, fixed.shape[-2:], stride, sigma)
        every = settings.sample_every
        residual = (mind_f - warp_image(mind_m, dense))[..., ::every, ::every]
        loss = sum(residual[b].pow(2).mean() + settings.smooth_weight * smoothness(field[b:b + 1])
                   for b in range(len(field)))
        loss.backward()
        optimiser.step()
    return field.detach()


def test_mind_instance_optimisation_equals_autograd_adam_and_finds_a_shift():
    from uda_core.models.instance_optimisation import (
        InstanceOptimisation,
        RefinedRegNet,
        refine_control_field_mind,
    )

    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(36.0), indexing="ij")
    blob = torch.exp(-((yy - 15) ** 2 + (xx - 17) ** 2) / 40.0)[None, None]
    fixed = blob.double().repeat(2, 1, 1, 1)
    moving = 1.0 - torch.roll(fixed, 2, dims=3)     # another contrast, shifted 2 px in x
    start = 0.3 * torch.randn(2, 2, 8, 9, dtype=torch.float64)
    for every in (1, 2):
        settings = InstanceOptimisation(iterations=15, lr=0.3, smooth_weight=0.01,
                                        sample_every=every)
        ours = refine_control_field_mind(fixed, moving, start, 4, 2.0, settings)
        reference = _mind_refinement_by_autograd(fixed, moving, start, 4, 2.0, settings)
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7)
        alone = refine_control_field_mind(fixed[1:], moving[1:], start[1:], 4, 2.0, settings)
        torch.testing.assert_close(alone, ours[1:])            # independent of the batch

    net = DiscreteRegNet(radius_px=3.0, n_per_axis=7, stride=4, features=8, width=8).eval()
    out = RefinedRegNet(net, InstanceOptimisation(60, 0.3, 0.01))(fixed.float(), moving.float())
    centre = out["disp_cp"][:, :, 2:6, 2:7]        # the blob's control points
    assert (centre[:, 1] - 2.0).abs().mean() < 0.5 and centre[:, 0].abs().mean() < 0.5


def test_instance_optimisation_refuses_an_unknown_similarity():
    from uda_core.models.instance_optimisation import InstanceOptimisation

    with pytest.raises(ValueError, match="similarity"):
        InstanceOptimisation(similarity="ncc")


def test_constants_cached_at_inference_serve_training_later():
    """The heads' averaging matrices and the dense-field matrices are cached; the first use
    under torch.inference_mode (RefinedRegNet) must not leave inference tensors that a
    later training step (autograd) cannot use."""
    from uda_core.models.instance_optimisation import RefinedRegNet

    torch.manual_seed(0)
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=5, stride=4, features=4, width=4)
    fixed, moving = torch.rand(1, 1, 52, 44), torch.rand(1, 1, 52, 44)  # a shape of its own
    RefinedRegNet(net)(fixed, moving)
    out = net(fixed, moving)
    (out["disp"].square().mean() + out["logits1"].mean()).backward()
    assert net.head1.log_alpha.grad is not None


def test_heads_in_one_pass_equal_each_head_alone():
    from uda_core.models.nets.regnet import head_logits

    torch.manual_seed(1)
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=5, stride=4, features=4, width=4).double()
    cost = -torch.rand(3, 25, 6, 7, dtype=torch.float64)
    one, two = head_logits((net.head1, net.head2), cost)
    torch.testing.assert_close(one, net.head1(cost))
    torch.testing.assert_close(two, net.head2(cost))
    (one.square().sum() + 2 * two.sum()).backward()
    for head in (net.head1, net.head2):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_fewer_instance_optimisation_steps_take_larger_ones():
    from uda_core.models.instance_optimisation import InstanceOptimisation

    default = InstanceOptimisation()
    fast = default.with_iterations(5)              # 20 -> 5 steps: lr x sqrt(4)
    assert fast.iterations == 5 and fast.lr == pytest.approx(2 * default.lr)
    assert fast.smooth_weight == default.smooth_weight
    assert default.with_iterations(20) == default
    assert default.with_iterations(0).iterations == 0
    with pytest.raises(ValueError, match="iterations"):
        default.with_iterations(-1)
