"""Registering volumes slice by slice (uda_core.runs.register): grids, outputs, recovery."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uda_core.errors import InputError
from uda_core.io import Volume
from uda_core.io.readers import read_labels, read_volume
from uda_core.io.resources import resources_dir
from uda_core.models.bundle import load_model
from uda_core.models.bundle.registration import make_registration_bundle
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.runs.register import check_same_grid, register_volumes, resample_onto

DEMO_T1 = "demo/brains/t1/sub-100_t1.nii.gz"   # skull-stripped, as demo:reg-t1 was trained
DEMO_LABELS = "demo/brains/t1/sub-100_labels.nii.gz"


def head(shape=(30, 34, 12), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(grids[0] ** 2 + grids[1] ** 2 + 0.3 * grids[2] ** 2)
    data = np.where(r < 0.8, 100.0, 5.0) - np.where(r < 0.4, 40.0, 0.0) + 20 * grids[0]
    return (data + rng.normal(0, 2, shape)).astype(np.float32)


def oblique_affine(spacing=(1.5, 1.5, 3.0)) -> np.ndarray:
    """LPS-ish, rotated in-plane by 10 degrees: outputs must still be on this grid."""
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1, -1, 1]) @ rotation @ np.diag(spacing)
    affine[:3, 3] = [20, 30, -10]
    return affine


@pytest.fixture(scope="module")
def tiny_reg_bundle():
    torch.manual_seed(0)
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=7, stride=4, features=8, width=8,
                         smooth_sigma_px=2.0)
    return make_registration_bundle(net, spacing_mm=(2.0, 2.0, 2.0), in_plane_shape=(32, 36))


def test_outputs_are_on_the_fixed_grid(tiny_reg_bundle):
    affine = oblique_affine()
    fixed = Volume(head(), affine, source="f.nii.gz")
    moving = Volume(head(seed=1)[::-1].copy(), affine, source="m.nii.gz")
    labels = Volume((moving.data > 50).astype(np.int16) + (moving.data > 90), affine)
    calls = []
    result = register_volumes(tiny_reg_bundle, fixed, moving, labels, prealign="off",
                              refine=None, fallback=False,
                              progress=lambda done, total: calls.append((done, total)))
    for volume in (result.warped, result.labels_warped, result.jacobian):
        assert volume.shape == fixed.shape and np.array_equal(volume.affine, fixed.affine)
    assert result.field_mm.shape == (*fixed.shape, 3) and result.field_mm.data.dtype == np.float32
    assert np.array_equal(result.field_mm.affine, fixed.affine)
    assert result.warped.data.dtype == np.float32 and np.isfinite(result.warped.data).all()
    assert result.labels_warped.data.dtype == np.int16
    assert set(np.unique(result.labels_warped.data)) <= {0, 1, 2}
    # a random network moves by at most its radius (3 px of 2 mm), in-plane only
    length = np.linalg.norm(result.field_mm.data, axis=-1)
    assert length.max() <= 6.0 + 1e-3 and length.max() > 0
    assert np.abs(result.field_mm.data[..., 2]).max() < 1e-4  # superior component: 0
    assert 0 <= result.folding <= 1 and result.method == "network" and result.slices > 0
    assert calls and calls[-1] == (result.slices, result.slices)


def test_zero_field_gives_back_the_moving_image_on_the_fixed_grid(tiny_reg_bundle, monkeypatch):
    import uda_core.runs.register as apply_module

    monkeypatch.setattr(apply_module, "_register_network",
                        lambda net, f, m, device, batch, step: np.zeros(
                            (f.shape[0], 2, *f.shape[1:]), np.float32))
    affine = oblique_affine()
    fixed = Volume(head(), affine)
    moving = Volume(head(seed=3), affine)
    labels = Volume((moving.data > 50).astype(np.uint8), affine)
    result = register_volumes(tiny_reg_bundle, fixed, moving, labels, prealign="off")
    np.testing.assert_allclose(result.warped.data, moving.data, atol=1e-4)
    assert np.array_equal(result.labels_warped.data, labels.data)
    assert np.abs(result.field_mm.data).max() == 0 and result.folding == 0.0
    np.testing.assert_allclose(result.jacobian.data, 1.0, atol=1e-5)


def test_grids_must_match(tiny_reg_bundle):
    fixed = Volume(head(), np.diag([2.0, 2.0, 2.0, 1.0]), source="f.nii.gz")
    smaller = Volume(head((28, 34, 12)), np.diag([2.0, 2.0, 2.0, 1.0]), source="small.nii.gz")
    finer = Volume(head(), np.diag([1.0, 2.0, 2.0, 1.0]), source="fine.nii.gz")
    for other, name in ((smaller, "small.nii.gz"), (finer, "fine.nii.gz")):
        with pytest.raises(InputError) as info:
            register_volumes(tiny_reg_bundle, fixed, other, prealign="off")
        text = str(info.value)
        assert text.startswith(name) and "differs from the fixed image" in text
        assert "\n" not in text and "resample" in text
    with pytest.raises(InputError, match="label grid differs from the moving image"):
        register_volumes(tiny_reg_bundle, fixed, fixed, smaller)
    check_same_grid(fixed, Volume(head(seed=2), fixed.affine.copy()))  # same grid: fine
    moved = resample_onto(finer, fixed)
    assert moved.same_grid(fixed) and moved.source == "fine.nii.gz"
    labels = resample_onto(Volume((finer.data > 50).astype(np.int16), finer.affine), fixed,
                           labels=True)
    assert labels.data.dtype == np.int16 and set(np.unique(labels.data)) <= {0, 1}


def test_sitk_baseline_keeps_an_identity_pair_in_place(tiny_reg_bundle):
    fixed = Volume(head((32, 36, 4)), np.diag([2.0, 2.0, 2.0, 1.0]))
    result = register_volumes(tiny_reg_bundle, fixed, fixed, method="sitk", prealign="off")
    assert result.method == "sitk" and result.field_mm.shape == (*fixed.shape, 3)
    length = np.linalg.norm(result.field_mm.data, axis=-1)  # mm; voxels are 2 mm
    assert length.mean() < 0.3 and length.max() < 1.0
    with pytest.raises(ValueError):
        register_volumes(None, fixed, fixed, method="demons")


# --- with the shipped demo model -------------------------------------------------------------

@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    bundle = load_model("demo:reg-t1", task="registration")
    t1 = read_volume(resources_dir() / DEMO_T1)
    labels = read_labels(resources_dir() / DEMO_LABELS)
    return bundle, t1, labels


def test_demo_model_identity_pair_gives_a_near_zero_field(demo):
    bundle, t1, labels = demo
    result = register_volumes(bundle, t1, t1, labels)
    brain = labels.data > 0
    length = np.linalg.norm(result.field_mm.data, axis=-1)[brain]
    assert np.median(length) < 0.5 and np.mean(length) < 1.0  # mm (voxels are 2 mm)
    assert (result.labels_warped.data == labels.data)[brain].mean() > 0.95
    assert result.folding < 0.01


def test_demo_model_recovers_a_translation(demo):
    bundle, t1, labels = demo
    shift = 2  # voxels along the first array axis (R, 2 mm voxels): u = +4 mm
    moving = t1.with_data(np.roll(t1.data, shift, axis=0))
    moving_labels = labels.with_data(np.roll(labels.data, shift, axis=0))
    result = register_volumes(bundle, t1, moving, moving_labels)
    brain = labels.data > 0
    along = result.field_mm.data[..., 0][brain]
    across = result.field_mm.data[..., 1][brain]
    assert abs(np.median(along) - 2.0 * shift) < 1.0 and abs(np.median(across)) < 1.0
    overlap_before = (moving_labels.data == labels.data)[brain].mean()
    overlap_after = (result.labels_warped.data == labels.data)[brain].mean()
    assert overlap_after > overlap_before + 0.1


def test_refinement_in_3d_keeps_the_outputs_on_the_fixed_grid_and_says_so(tiny_reg_bundle):
    from uda_core.spatial.volume_refine import VolumeRefinement

    affine = oblique_affine()
    fixed = Volume(head(), affine, source="f.nii.gz")
    moving = Volume(np.roll(head(seed=1), 1, axis=2), affine, source="m.nii.gz")
    labels = Volume((moving.data > 50).astype(np.int16), affine)
    result = register_volumes(tiny_reg_bundle, fixed, moving, labels, prealign="off",
                              refine=None, fallback=False,
                              refine_3d=VolumeRefinement(iterations=5))
    for volume in (result.warped, result.labels_warped, result.field_mm):
        assert volume.shape[:3] == fixed.shape and np.array_equal(volume.affine, fixed.affine)
    assert np.isfinite(result.field_mm.data).all()
    assert {"before_3d", "after_3d"} <= set(result.similarity)
    assert any(note.startswith("3D refinement (5 steps") for note in result.notes)
    # the Jacobian is the written map's own 3D determinant, on the fixed grid
    from uda_core.spatial.jacobian_3d import jacobian_determinant_mm

    assert result.jacobian.shape == fixed.shape
    np.testing.assert_allclose(result.jacobian.data,
                               jacobian_determinant_mm(result.field_mm.data, affine))
    assert 0.0 <= result.folding <= 1.0


def test_the_3d_refinement_reports_its_steps_and_stops_on_cancel(tiny_reg_bundle):
    from uda_core.errors import UdaError
    from uda_core.spatial.volume_refine import VolumeRefinement

    affine = oblique_affine()
    fixed = Volume(head(), affine, source="f.nii.gz")
    moving = Volume(np.roll(head(seed=1), 1, axis=2), affine, source="m.nii.gz")
    calls = []
    result = register_volumes(tiny_reg_bundle, fixed, moving, prealign="off", refine=None,
                              refine_3d=VolumeRefinement(iterations=4),
                              progress=lambda done, total: calls.append((done, total)))
    slices, total = result.slices, result.slices + 4
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [d for d, _ in calls][-4:] == [slices + 1, slices + 2, slices + 3, slices + 4]

    def cancel() -> bool:               # True once the 3D refinement's second step is done
        return bool(calls) and calls[-1][0] >= slices + 2

    calls.clear()
    with pytest.raises(UdaError, match="cancelled"):
        register_volumes(tiny_reg_bundle, fixed, moving, prealign="off", refine=None,
                         refine_3d=VolumeRefinement(iterations=50), cancel=cancel,
                         progress=lambda done, total: calls.append((done, total)))
    assert calls[-1][0] == slices + 2           # stopped inside the 3D step, not after 50


def test_refine_3d_auto_only_refines_pairs_that_needed_pre_alignment(tiny_reg_bundle):
    from uda_core.spatial.volume_refine import VolumeRefinement

    affine = oblique_affine()
    fixed = Volume(head(), affine, source="f.nii.gz")
    settings = VolumeRefinement(iterations=3)
    aligned = register_volumes(tiny_reg_bundle, fixed, Volume(head(), affine), refine=None,
                               refine_3d=settings, refine_3d_mode="auto")
    assert aligned.prealign_ras is None and "after_3d" not in aligned.similarity
    assert any(note.startswith("not refined in 3D") for note in aligned.notes)
    forced = register_volumes(tiny_reg_bundle, fixed, Volume(head(), affine), refine=None,
                              refine_3d=settings, refine_3d_mode="on", fallback=False)
    assert "after_3d" in forced.similarity
    moved = Volume(np.roll(head(seed=1), 2, axis=0), affine)
    baseline = register_volumes(None, fixed, moved, method="sitk", prealign="on",
                                refine_3d=settings, refine_3d_mode="auto")
    assert "after_3d" not in baseline.similarity      # SimpleITK's result stays its own
    with pytest.raises(ValueError, match="refine_3d_mode"):
        register_volumes(tiny_reg_bundle, fixed, fixed, refine_3d=settings,
                         refine_3d_mode="always")
