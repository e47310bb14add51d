"""What a real scan brings (issue 11, item 5), read through `uda predict`: each case gets a mask
on the input's own grid (same shape and affine, known labels only) or one clear line.

Cases, on small synthetic volumes: noisy non-zero background; int16 voxels with scl_slope /
scl_inter and values in the thousands; a slab that covers only part of the head; a sagittal
acquisition (PIL, 1 x 1 x 3.5 mm); a head tilted by 15 degrees (oblique affine); a neck in
a tall field of view. Where the same physical image is stored differently (a permuted and
flipped array, rescaled intensities) the mask must be the same one.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import blob_volume, make_seg_bundle, write_nifti
from uda_core.cli import main

LABELS = {0, 1, 2, 3}


@pytest.fixture(scope="module")
def varied_model(tmp_path_factory) -> str:
    """The tiny U-Net with its final layer made decisive (no bias, larger weights), so that
    its mask holds all four labels rather than one constant class."""
    import dataclasses

    import torch

    from uda_core.models.bundle import save_bundle
    bundle = make_seg_bundle(seed=1)
    state = dict(bundle.state_dict)
    state["final.bias"] = torch.zeros_like(state["final.bias"])
    state["final.weight"] = state["final.weight"] * 20
    path = tmp_path_factory.mktemp("varied") / "varied.pt"
    return str(save_bundle(dataclasses.replace(bundle, state_dict=state), path))


def _predict(tmp_path, capsys, model, scan, name):
    out = tmp_path / f"out_{name}"
    code = main(["predict", "--model", str(model), "--out", str(out), "--device", "cpu",
                 str(scan)])
    err = capsys.readouterr().err
    assert code == 0, err
    stem = nib.filename_parser.splitext_addext(str(scan))[0].rsplit("/", 1)[-1]
    return nib.load(str(out / f"{stem}_seg.nii.gz"))


def _assert_on_input_grid(result, scan):
    source = nib.load(str(scan))
    assert result.shape == source.shape
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-5)
    assert result.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(result.dataobj)).tolist()) <= LABELS


def _head(shape=(32, 36, 30), seed=0) -> np.ndarray:
    """A blob "brain" inside a dark skull shell and a bright scalp shell (float32)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    data = np.select([r < 0.35, r < 0.6, r < 0.75, r < 0.9], [60.0, 100.0, 10.0, 140.0], 5.0)
    return (data + rng.normal(0, 3, shape)).astype(np.float32)


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


# ---------------------------------------------------------------- each case on its grid

def _noisy_background(tmp_path):
    rng = np.random.default_rng(3)
    head = _head() * 8.0
    noise = np.abs(rng.normal(150.0, 60.0, head.shape))  # Rician-like air, never zero
    data = np.where(head > 60.0, head, noise).astype(np.float32)
    assert np.count_nonzero(data == 0) == 0
    return write_nifti(tmp_path / "noisy.nii.gz", data)


def _int16_scaled(tmp_path):
    raw = np.rint(_head() * 20.0).astype(np.int16)  # stored values up to ~2800
    image = nib.Nifti1Image(raw, np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_slope_inter(2.5, -300.0)  # real values up to ~7000
    path = tmp_path / "int16.nii.gz"
    nib.save(image, str(path))
    stored = nib.load(str(path))
    assert stored.get_data_dtype() == np.int16 and stored.dataobj.slope == 2.5
    assert stored.get_fdata().max() > 5000
    return str(path)


def _slab(tmp_path):
    head = _head((32, 36, 40))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[2, 3] = 2.0 * 15  # where these slices sit in the full head
    return write_nifti(tmp_path / "slab.nii.gz", head[:, :, 15:25], affine)  # 20 mm along z


def _thin_slab(tmp_path):
    return write_nifti(tmp_path / "thin.nii.gz", _head((32, 36, 30))[:, :, 14:16])  # 4 mm


def _sagittal_pil(tmp_path):
    # Array axes: 0 -> posterior (1 mm), 1 -> inferior (1 mm), 2 -> left (3.5 mm slices).
    data = _head((60, 56, 16))
    affine = np.array([[0.0, 0.0, -3.5, 30.0], [-1.0, 0.0, 0.0, 35.0],
                       [0.0, -1.0, 0.0, 40.0], [0.0, 0.0, 0.0, 1.0]])
    assert "".join(nib.aff2axcodes(affine)) == "PIL"
    return write_nifti(tmp_path / "sagittal.nii.gz", data, affine)


def _tilted(tmp_path):
    affine = np.eye(4)
    affine[:3, :3] = _rotation_x(15.0) @ np.diag([2.0, 2.0, 2.0])
    affine[:3, 3] = [-30.0, -40.0, -25.0]
    return write_nifti(tmp_path / "tilted.nii.gz", _head(), affine)


def _neck(tmp_path):
    head = _head((32, 36, 30))
    column = np.zeros((32, 36, 24), np.float32) + 5.0
    grids = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 36), indexing="ij")
    column[np.hypot(*grids) < 0.45] = 120.0  # the neck below the head
    return write_nifti(tmp_path / "neck.nii.gz", np.concatenate([column, head], axis=2))


CASES = {"noisy background": _noisy_background, "int16 with slope/intercept": _int16_scaled,
         "slab 20 mm": _slab, "slab 4 mm": _thin_slab, "sagittal PIL 1x1x3.5": _sagittal_pil,
         "tilted 15 degrees": _tilted, "neck in the field of view": _neck}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mask_lands_on_the_input_grid(case, tmp_path, capsys, varied_model):
    scan = CASES[case](tmp_path)
    _assert_on_input_grid(_predict(tmp_path, capsys, varied_model, scan, "a"), scan)


# ---------------------------------------------------------------- same image, same mask

def test_sagittal_storage_of_an_axial_scan_gets_the_same_mask(tmp_path, capsys,
                                                              varied_model):
    """The same voxels stored as a PIL (sagittal) array: the mask is the same, permuted."""
    data = _head((30, 34, 26)) + blob_volume((30, 34, 26), seed=4)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-29.0, -33.0, -25.0]
    axial = write_nifti(tmp_path / "axial.nii.gz", data, affine)
    # array (x, y, z) RAS -> (P, I, L): index p = ny-1-y, i = nz-1-z, l = nx-1-x
    pil = np.flip(data, axis=(0, 1, 2)).transpose(1, 2, 0)
    to_ras = np.zeros((4, 4))
    to_ras[:3, :3] = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float)  # (p, i, l) -> flipped
    flip = np.diag([-1.0, -1.0, -1.0, 1.0])
    flip[:3, 3] = np.array(data.shape) - 1
    to_ras[3, 3] = 1.0
    pil_affine = affine @ flip @ to_ras
    assert "".join(nib.aff2axcodes(pil_affine)) == "PIL"
    sagittal = write_nifti(tmp_path / "pil.nii.gz", np.ascontiguousarray(pil), pil_affine)
    mask_axial = np.asarray(_predict(tmp_path, capsys, varied_model, axial, "a").dataobj)
    assert len(np.unique(mask_axial)) > 1  # not a trivially constant mask
    result = _predict(tmp_path, capsys, varied_model, sagittal, "s")
    _assert_on_input_grid(result, sagittal)
    expected = np.flip(mask_axial, axis=(0, 1, 2)).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(result.dataobj), expected)


def test_scanner_scaling_does_not_change_the_mask(tmp_path, capsys, varied_model):
    """int16 with slope/intercept (values in the thousands) vs the same image as float32."""
    head = _head()
    plain = write_nifti(tmp_path / "plain.nii.gz", head)
    raw = np.rint(head * 20.0).astype(np.int16)
    image = nib.Nifti1Image(raw, np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_slope_inter(2.5, -300.0)
    scaled = tmp_path / "scaled.nii.gz"
    nib.save(image, str(scaled))
    a = np.asarray(_predict(tmp_path, capsys, varied_model, plain, "p").dataobj)
    b = np.asarray(_predict(tmp_path, capsys, varied_model, scaled, "s").dataobj)
    assert len(np.unique(a)) > 1
    assert np.mean(a == b) > 0.99  # only rounding to int16 differs


# ---------------------------------------------------------------- brain extraction

@pytest.mark.parametrize("geometry", ["oblique", "anisotropic"])
def test_brain_extraction_lands_on_the_input_grid(geometry, tmp_path, capsys,
                                                  varied_model):
    """The brain region (non-background of the mask) of a simulated head stored obliquely
    or with anisotropic voxels is on the input grid, inside the field of view."""
    affine = np.eye(4)
    if geometry == "oblique":
        shape, zooms = (32, 36, 30), np.diag([2.0, 2.0, 2.0])
        affine[:3, :3] = _rotation_x(15.0) @ np.array(
            [[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1]]) @ zooms
    else:
        shape = (60, 64, 16)
        affine[:3, :3] = np.diag([1.0, 1.0, 3.5])
    affine[:3, 3] = -(affine[:3, :3] @ (np.array(shape) - 1)) / 2
    scan = write_nifti(tmp_path / f"head_{geometry}.nii.gz", _head(shape), affine)
    result = _predict(tmp_path, capsys, varied_model, scan, geometry)
    _assert_on_input_grid(result, scan)
    brain = np.asarray(result.dataobj) > 0
    assert brain.shape == tuple(shape)
