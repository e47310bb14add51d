"""BlendNet: two networks' class probabilities mixed, saved and loaded as a bundle."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import make_seg_bundle
from uda_core.errors import ModelError
from uda_core.models.bundle import load_model, save_bundle
from uda_core.models.nets.blend import BlendNet, unblended


def _spec(bundle):
    return {"architecture": bundle.architecture, "arch_kwargs": bundle.full_arch_kwargs()}


def _blend(weight=0.25):
    a, b = make_seg_bundle(seed=1), make_seg_bundle(seed=2)
    return BlendNet.of(a.build_network(), b.build_network(), _spec(a), _spec(b), weight), a


def test_the_output_is_the_log_of_the_weighted_mean_of_the_members_probabilities():
    blend, _ = _blend(0.25)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p1 = torch.softmax(blend.first(x), 1)
        p2 = torch.softmax(blend.second(x), 1)
        out = blend(x)
    torch.testing.assert_close(out.exp(), 0.75 * p1 + 0.25 * p2)
    torch.testing.assert_close(torch.softmax(out, 1), 0.75 * p1 + 0.25 * p2)


def test_weight_zero_is_the_first_member_alone():
    blend, _ = _blend(0.0)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(blend(x), 1), torch.softmax(blend.first(x), 1))
    assert unblended(blend) is blend.first
    blend.set_weight(0.5)
    assert unblended(blend) is blend
    with pytest.raises(ValueError, match="0..1"):
        blend.set_weight(1.5)


def test_a_blend_bundle_saves_and_loads_by_architecture_name(tmp_path):
    blend, parent = _blend(0.5)
    path = save_bundle(parent.with_network(blend), tmp_path / "blend.pt")
    loaded = load_model(path)
    assert loaded.architecture == "blend"
    assert [m["architecture"] for m in loaded.arch_kwargs["members"]] == ["unet2d", "unet2d"]
    assert loaded.early_head_state_dict is None
    from uda_core.models.bundle import describe
    assert describe(loaded)[0].startswith("Network: blend of unet2d (")
    assert describe(loaded)[0].endswith("the guide's share 0.5")
    net = loaded.build_network()
    assert float(net.weight) == 0.5
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(net(x), blend(x))


def test_a_blend_of_weight_zero_is_saved_as_the_plain_network(tmp_path):
    blend, parent = _blend(0.0)
    loaded = load_model(save_bundle(parent.with_network(blend), tmp_path / "plain.pt"))
    assert loaded.architecture == "unet2d"
    assert loaded.arch_kwargs == parent.arch_kwargs


def test_members_of_other_kinds_are_refused_when_the_file_is_read(tmp_path):
    blend, parent = _blend(0.5)
    bundle = parent.with_network(blend)
    members = [dict(m) for m in bundle.arch_kwargs["members"]]
    for bad in ("discrete_regnet", "blend", "os.system"):
        wrong = dataclasses.replace(bundle, arch_kwargs={"members": [
            members[0], {"architecture": bad, "arch_kwargs": {}}]})
        with pytest.raises(ModelError, match="blend member cannot be"):
            save_bundle(wrong, tmp_path / f"{bad}.pt")
    with pytest.raises(ValueError, match="exactly two"):
        BlendNet(members[:1])
