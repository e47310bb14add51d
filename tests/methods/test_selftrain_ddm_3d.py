"""selftrain and ddm on 3D patches: the views and intensity changes on (B, 1, X, Y, Z), the
teacher's flips, ddm's paired patches cut at the same voxels of both volumes, and a few steps
of `uda adapt` with a tiny 3D bundle writing its outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import blob_volume, make_seg_bundle_3d, write_nifti
from uda_core.cli import main
from uda_core.engine import EngineConfig
from uda_core.grid.prepare import ModelInput
from uda_core.io.readers import read_labels, read_volume
from uda_core.methods import intensity_views as iv
from uda_core.methods.catalogue import ADAPTS_3D
from uda_core.methods.ddm import DDM, DDMConfig
from uda_core.methods.pseudo_labels import left_right_dim, view_averaged_probs
from uda_core.methods.registry import PATCH_METHODS
from uda_core.methods.selftrain import teacher_flip_dims
from uda_core.models.bundle import load_model, save_bundle
from uda_core.tasks.segmentation_data import AdaptationData
from uda_core.tasks.segmentation_patches import PatchPool, PatchSegmentationTask

# --- intensity changes and views on 3D patches ---------------------------------------------


def test_gamma_contrast_and_scale_shift_take_each_3d_patch_on_its_own():
    images = torch.tensor([[-1.0, 0.0, 1.0], [2.0, 4.0, 6.0]]).view(2, 1, 1, 3, 1)
    torch.testing.assert_close(iv.gamma(images, torch.tensor([2.0, 1.0])).flatten(1),
                               torch.tensor([[-1.0, -0.5, 1.0], [2.0, 4.0, 6.0]]))
    torch.testing.assert_close(iv.contrast(images, torch.tensor([2.0, 0.5])).flatten(1),
                               torch.tensor([[-2.0, 0.0, 2.0], [3.0, 4.0, 5.0]]))
    torch.testing.assert_close(iv.scale_shift(images, torch.tensor([2.0, 0.5]),
                                              torch.tensor([1.0, 0.0])).flatten(1),
                               torch.tensor([[-1.0, 1.0, 3.0], [1.0, 2.0, 3.0]]))


def test_3d_blur_is_the_product_of_three_1d_gaussians_per_patch():
    images = torch.zeros(2, 1, 7, 7, 7)
    images[:, 0, 3, 3, 3] = 1.0
    blurred = iv.gaussian_blur(images, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(blurred[0], images[0])
    w = torch.exp(-0.5 * torch.arange(-2.0, 3.0) ** 2)
    w = w / w.sum()
    expected = torch.zeros(7, 7, 7)
    expected[1:6, 1:6, 1:6] = w.view(-1, 1, 1) * w.view(1, -1, 1) * w.view(1, 1, -1)
    torch.testing.assert_close(blurred[1, 0], expected)
    constant = torch.full((1, 1, 5, 6, 4), 2.0)     # replicated borders keep a constant
    torch.testing.assert_close(iv.gaussian_blur(constant, torch.tensor([1.0])), constant)
    strong = iv.strong_view(torch.randn(2, 1, 6, 6, 6), torch.Generator().manual_seed(0),
                            blur_prob=1.0)
    assert strong.shape == (2, 1, 6, 6, 6)


class PositionNet3D(nn.Module):
    """Two classes; class 1's logit is the intensity + 0.3 i + 0.1 j + 0.05 k (the voxel's
    indices along the three spatial axes)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = images[:, 0] + _position(*images.shape[-3:])
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def _position(a: int, b: int, c: int) -> torch.Tensor:
    return (0.3 * torch.arange(a).view(-1, 1, 1) + 0.1 * torch.arange(b).view(1, -1, 1)
            + 0.05 * torch.arange(c).view(1, 1, -1)).float()


def test_view_average_flips_each_given_3d_axis_and_flips_it_back():
    images = torch.zeros(1, 1, 4, 3, 2)
    probs = view_averaged_probs(PositionNet3D(), images, torch.ones(0, 1), torch.zeros(0, 1),
                                flip_dims=(2, 4))
    p = _position(4, 3, 2)
    expected = (torch.sigmoid(p) + torch.sigmoid(p.flip(0)) + torch.sigmoid(p.flip(2))) / 3
    torch.testing.assert_close(probs[0, 1], expected)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(1, 4, 3, 2))


def test_the_teachers_flips_follow_the_bundles_axes_and_mirror_axes():
    plain = {"axes": [0, 1, 2], "mirror_axes": []}
    nnunet = {"axes": [2, 1, 0], "mirror_axes": [0, 1, 2]}     # grid x is network axis 2
    assert left_right_dim(None) == 2 and left_right_dim(plain) == 2
    assert left_right_dim(nnunet) == 4
    assert teacher_flip_dims("auto", None) == (2,)             # a 2D slice: left-right only
    assert teacher_flip_dims("auto", plain) == (2,)
    assert teacher_flip_dims("auto", nnunet) == (4, 2, 3)
    assert teacher_flip_dims("left-right", nnunet) == (4,)
    assert teacher_flip_dims("all", plain) == (2, 3, 4)
    assert teacher_flip_dims("all", None) == (2, 3)


def test_the_catalogue_names_the_methods_with_a_3d_path():
    assert set(ADAPTS_3D) == set(PATCH_METHODS) >= {"selftrain", "ddm"}


# --- ddm's paired patches ------------------------------------------------------------------


def _data(volume: np.ndarray, paired: np.ndarray) -> AdaptationData:
    """One target (grid (X, Y, Z) = volume.shape) and its paired image, as prepared data."""
    slices = np.ascontiguousarray(np.moveaxis(volume, 2, 0), dtype=np.float32)   # (Z, X, Y)
    z = slices.shape[0]
    model_input = ModelInput(slices, np.eye(4), volume.shape,
                             np.linspace(0, 1, z).astype(np.float32))
    return AdaptationData(volumes=[None], inputs=[model_input],
                          paired=[np.ascontiguousarray(np.moveaxis(paired, 2, 0),
                                                       dtype=np.float32)])


@pytest.mark.parametrize("axes", [[0, 1, 2], [2, 0, 1]])
def test_paired_patches_are_cut_at_the_same_voxels_of_both_volumes(axes, tmp_path):
    rng = np.random.default_rng(0)
    volume = np.zeros((14, 11, 9), np.float32)
    volume[2:12, 2:10, 1:8] = rng.uniform(1, 2, (10, 8, 7))    # distinct values in the head
    paired = 3.0 * volume + 5.0                                 # same voxels, other contrast
    window = {"roi_size": [6, 5, 4], "axes": axes}
    for folder in (None, tmp_path / f"disk{axes[0]}"):
        pool = PatchPool(_data(volume, paired), window, folder)
        patches, _, paired_patches = pool.sample(np.random.default_rng(3), 12)
        assert patches.shape == paired_patches.shape == (12, 6, 5, 4)
        np.testing.assert_allclose(paired_patches, 3.0 * patches + 5.0, rtol=1e-6)
        assert len({p.tobytes() for p in patches}) > 1          # the boxes differ


def test_a_paired_image_off_the_target_grid_is_refused():
    data = _data(np.ones((8, 8, 8), np.float32), np.ones((8, 8, 8), np.float32))
    data.paired = [np.ones((8, 8, 7), np.float32)]
    with pytest.raises(ValueError, match="paired image 0 on the model grid is"):
        PatchPool(data, {"roi_size": [4, 4, 4], "axes": [0, 1, 2]})


def test_ddm_step_on_3d_patches_matches_nothing_when_both_volumes_are_the_same():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(20, 20, 20)).astype(np.float32)
    bundle = make_seg_bundle_3d(mirror_axes=())
    results = []
    for paired in (volume, -volume):
        method = DDM(bundle.build_network(), bundle, DDMConfig(), torch.device("cpu"))
        method.setup()
        task = PatchSegmentationTask(method, _data(volume, paired),
                                     EngineConfig(batch_size=2, score_slices=2))
        batch = task.sample_batch(np.random.default_rng(0))
        assert batch.paired_source is not None and batch.paired_source.shape == (2, 1, 16, 16, 16)
        method.train_mode()
        results.append(method.step(batch))
    assert results[0]["match"] == pytest.approx(0.0, abs=1e-6)
    assert results[1]["match"] > 1e-4


# --- `uda adapt` with a 3D bundle ------------------------------------------------------------


@pytest.fixture
def scans(tmp_path):
    """Two target volumes at 2 mm and, per target, a paired image on the same grid."""
    targets, paired = [], []
    for i in range(2):
        shape = (22 + 2 * i, 24, 20)
        targets.append(str(write_nifti(tmp_path / f"t2_{i}.nii.gz", blob_volume(shape, seed=i))))
        paired.append(str(write_nifti(tmp_path / f"t1_{i}.nii.gz",
                                      blob_volume(shape, seed=i)[::-1].copy() + 1.0)))
    return targets, paired


@pytest.mark.parametrize("method", ["selftrain", "ddm"])
def test_uda_adapt_runs_selftrain_and_ddm_on_a_3d_bundle(method, scans, tmp_path):
    targets, paired = scans
    model = save_bundle(make_seg_bundle_3d(mirror_axes=()), tmp_path / "tiny3d.pt")
    settings = tmp_path / "settings.json"
    sure = {"confidence": 0.0, "lr": 1e-2} if method == "selftrain" else {}   # a random net
    settings.write_text(json.dumps({**sure, "engine": {"batch_size": 2, "score_every": 1,
                                                       "select_by": "last"}}))
    out = tmp_path / method
    args = ["adapt", "--model", str(model), "--method", method, "--steps", "2", "--out",
            str(out), "--device", "cpu", "--config", str(settings), *targets]
    if method == "ddm":
        args += ["--paired", *paired]
    assert main(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["method"] == method
    adapted = load_model(out / "adapted.pt")
    assert adapted.dims == 3 and adapted.provenance["method"] == method
    before = load_model(model).state_dict
    assert any(not torch.equal(v, before[k]) for k, v in adapted.state_dict.items()
               if v.is_floating_point())                       # "last": the adapted weights
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    term = {"selftrain": "loss/ce", "ddm": "loss/match"}[method]
    assert [r["step"] for r in steps if term in r] == [1, 2]
    if method == "selftrain":
        assert all(r["loss/kept"] > 0 for r in steps if term in r)   # it trained
    for target in targets:
        stem = target.rsplit("/", 1)[1].removesuffix(".nii.gz")
        mask = read_labels(out / "masks" / f"{stem}_seg.nii.gz")
        volume = read_volume(target)
        assert mask.shape == volume.shape
        np.testing.assert_allclose(mask.affine, volume.affine)


def test_3d_ddm_with_labelled_source_images_is_refused_in_one_line(scans, tmp_path, capsys):
    targets, paired = scans
    model = save_bundle(make_seg_bundle_3d(mirror_axes=()), tmp_path / "tiny3d.pt")
    write_nifti(tmp_path / "src_labels.nii.gz", (blob_volume((22, 24, 20)) > 50).astype(np.uint8))
    source = write_nifti(tmp_path / "src.nii.gz", blob_volume((22, 24, 20)))
    assert main(["adapt", "--model", str(model), "--method", "ddm", "--out",
                 str(tmp_path / "o"), *targets, "--paired", *paired, "--source",
                 str(source)]) == 1
    err = capsys.readouterr().err.strip()
    assert "labelled source images for a 3D model are not supported yet" in err
    assert "\n" not in err
