"""Pre-alignment, composition, do-no-harm notes and bad input of uda_core.runs.register."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uda_core.errors import InputError
from uda_core.grid.coregister import prealign_affine
from uda_core.io import Volume
from uda_core.models.bundle.registration import (
    make_registration_bundle,
    modality_mismatch,
    registration_modalities,
)
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.runs import register as reg
from uda_core.runs.register import compose_with_affine, register_volumes


def phantom(shape=(40, 44, 36)) -> np.ndarray:
    """A head-like ellipsoid with an off-centre inner structure (no symmetry to hide a
    rotation), smooth enough for mutual information at 2 mm."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    x, y, z = grids
    outer = (x / 0.8) ** 2 + (y / 0.7) ** 2 + (z / 0.75) ** 2 < 1
    inner = ((x - 0.25) / 0.3) ** 2 + ((y + 0.1) / 0.2) ** 2 + (z / 0.35) ** 2 < 1
    bar = (np.abs(x + 0.3) < 0.12) & (np.abs(y - 0.2) < 0.35) & (np.abs(z) < 0.5)
    data = 100.0 * outer - 50.0 * inner * outer + 30.0 * bar * outer + 5.0
    from scipy.ndimage import gaussian_filter
    return gaussian_filter(data, 1.0).astype(np.float32)


def known_affine() -> np.ndarray:
    angle = np.deg2rad(7)
    transform = np.eye(4)
    transform[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0],
                                  [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) @ np.diag(
        [1.05, 0.97, 1.0])
    transform[:3, 3] = [4.0, -6.0, 3.0]
    return transform


def test_prealignment_recovers_a_known_affine():
    fixed = Volume(phantom(), np.diag([2.0, 2.0, 2.0, 1.0]), source="fixed.nii.gz")
    truth = known_affine()
    # the same voxels placed by truth @ affine: moving(q) = fixed(truth^-1 q), so the
    # affine that reads moving at A p to give fixed(p) is truth itself
    moving = Volume(fixed.data.copy(), truth @ fixed.affine, source="moving.nii.gz")
    found = prealign_affine(fixed, moving)
    head = np.argwhere(fixed.data > 50).astype(np.float64)
    world = head @ fixed.affine[:3, :3].T + fixed.affine[:3, 3]
    error = np.linalg.norm(world @ (found[:3, :3] - truth[:3, :3]).T
                           + found[:3, 3] - truth[:3, 3], axis=1)
    moved = np.linalg.norm(world @ (truth[:3, :3] - np.eye(3)).T + truth[:3, 3], axis=1)
    assert moved.mean() > 4.0  # the known affine moves the head by two voxels and more
    assert error.mean() < 1.0 and error.max() < 2.5  # mm; voxels are 2 mm


def test_composed_field_equals_affine_then_deformable():
    rng = np.random.default_rng(0)
    fixed = Volume(phantom((20, 22, 18)), np.diag([2.0, 2.0, 2.0, 1.0]))
    moving = Volume(phantom((20, 22, 18)) + rng.normal(0, 1, (20, 22, 18)).astype(np.float32),
                    np.diag([2.0, 2.0, 2.0, 1.0]))
    affine = known_affine()
    deformable = np.zeros((*fixed.shape, 3), np.float32)
    deformable[..., :2] = rng.normal(0, 1.5, (*fixed.shape, 2))
    composed = compose_with_affine(deformable, fixed, affine)
    direct = reg._sample_through(moving, fixed, composed, order=1)
    two_steps = reg._sample_through(reg._through_affine(moving, affine), fixed, deformable, 1)
    np.testing.assert_allclose(direct, two_steps, atol=1e-3)
    # the composition's definition: p + u(p) = A (p + d(p))
    p = np.array([3, 5, 7])
    world = fixed.affine[:3, :3] @ p + fixed.affine[:3, 3]
    expected = affine[:3, :3] @ (world + deformable[3, 5, 7]) + affine[:3, 3] - world
    np.testing.assert_allclose(composed[3, 5, 7], expected, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_bundle():
    torch.manual_seed(0)
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=7, stride=4, features=8, width=8,
                         smooth_sigma_px=2.0)
    return make_registration_bundle(net, spacing_mm=(2.0, 2.0, 2.0), in_plane_shape=(32, 36))


def test_register_volumes_writes_the_composed_field(tiny_bundle, monkeypatch):
    one_px = lambda net, f, m, device, batch, step: np.stack(  # noqa: E731
        [np.ones(f.shape, np.float32), np.zeros(f.shape, np.float32)], axis=1)
    monkeypatch.setattr(reg, "_register_network", one_px)
    fixed = Volume(phantom((30, 34, 20)), np.diag([2.0, 2.0, 2.0, 1.0]), source="f.nii.gz")
    truth = known_affine()
    moving = Volume(fixed.data.copy(), truth @ fixed.affine, source="m.nii.gz")
    result = register_volumes(tiny_bundle, fixed, moving, prealign="on", fallback=False)
    assert result.prealign_ras is not None
    plain = register_volumes(tiny_bundle, fixed, fixed.with_data(fixed.data.copy()),
                             prealign="off", fallback=False)
    expected = compose_with_affine(plain.field_mm.data, fixed, result.prealign_ras)
    np.testing.assert_allclose(result.field_mm.data, expected, atol=1e-3)
    assert np.abs(plain.field_mm.data[..., 0]).max() > 1.0  # the deformable step: 2 mm


def test_modality_mismatch_says_so_in_one_line(tiny_bundle):
    fixed = Volume(phantom((30, 34, 12)), np.diag([2.0, 2.0, 2.0, 1.0]),
                   source="sub-01_T1w.nii.gz")
    moving = Volume(phantom((30, 34, 12)), fixed.affine.copy(), source="sub-01_T2w.nii.gz")
    result = register_volumes(tiny_bundle, fixed, moving, prealign="off", refine=None)
    lines = [n for n in result.notes if "trained on" in n]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "T1w, not T2w" in lines[0] and "uda reg adapt" in lines[0]
    assert "--method sitk" in lines[0]
    same = register_volumes(tiny_bundle, fixed, fixed.with_data(fixed.data.copy()),
                            prealign="off", refine=None, moving_modality="T1w")
    assert not [n for n in same.notes if "trained on" in n]


def test_bundles_record_their_modalities(tiny_bundle):
    assert registration_modalities(tiny_bundle) == {"fixed": "T1w", "moving": ["T1w"]}
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=7, stride=4, features=8, width=8)
    adapted = make_registration_bundle(net, in_plane_shape=(32, 36),
                                       moving_modalities=["T1w", "t2"])
    assert registration_modalities(adapted)["moving"] == ["T1w", "T2w"]
    assert modality_mismatch(adapted, "T2w") is None
    assert "PDw" in modality_mismatch(adapted, "pd")
    old = make_registration_bundle(net, in_plane_shape=(32, 36))
    old.provenance.pop("modalities")
    old.provenance.update(method="mcd-pemd", data={"moving": ["/x/sub-100_pd.nii.gz"]})
    assert registration_modalities(old)["moving"] == ["PDw", "T1w"]


def test_learned_result_worse_than_prealigned_falls_back(tiny_bundle, monkeypatch):
    noise = lambda net, f, m, device, batch, step: np.random.default_rng(0).normal(  # noqa: E731
        0, 3, (f.shape[0], 2, *f.shape[1:])).astype(np.float32)
    monkeypatch.setattr(reg, "_register_network", noise)
    fixed = Volume(phantom((30, 34, 12)), np.diag([2.0, 2.0, 2.0, 1.0]))
    result = register_volumes(tiny_bundle, fixed, fixed.with_data(fixed.data.copy()),
                              prealign="off")
    assert result.fallback and np.abs(result.field_mm.data).max() == 0
    assert any("lowered the mutual information" in n for n in result.notes)
    kept = register_volumes(tiny_bundle, fixed, fixed.with_data(fixed.data.copy()),
                            prealign="off", fallback=False)
    assert not kept.fallback and np.abs(kept.field_mm.data).max() > 0
    assert kept.similarity["registered"] < kept.similarity["prealigned"]


def test_bad_input_is_one_line_naming_the_file(tiny_bundle):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    good = Volume(phantom((30, 34, 12)), affine, source="good.nii.gz")
    for data, word in ((np.zeros((30, 34, 12), np.float32), "constant"),
                       (np.full((30, 34, 12), np.nan, np.float32), "empty")):
        with pytest.raises(InputError) as info:
            register_volumes(tiny_bundle, good, Volume(data, affine, source="bad.nii.gz"))
        assert str(info.value).startswith("bad.nii.gz: moving image is " + word)
    corner = np.full((30, 34, 12), 1.0, np.float32)
    corner[:6, :6] = 100.0  # the moving foreground lies outside the fixed head
    apart = good.with_data(np.full((30, 34, 12), 1.0, np.float32))
    apart.data[18:, 20:] = 100.0  # the fixed head: the opposite corner
    with pytest.raises(InputError) as info:
        register_volumes(tiny_bundle, apart, Volume(corner, affine, source="far.nii.gz"),
                         prealign="off")
    assert str(info.value).startswith("far.nii.gz: does not overlap the fixed image")
