"""`uda reg train-source` and `uda reg apply` end to end, and bad inputs giving one line."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main
from uda_core.models.bundle import save_bundle
from uda_core.models.bundle.registration import load_registration_model, make_registration_bundle
from uda_core.models.nets.regnet import DiscreteRegNet


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def reg_model(tmp_path) -> str:
    torch.manual_seed(0)
    net = DiscreteRegNet(radius_px=3.0, n_per_axis=7, stride=4, features=8, width=8)
    bundle = make_registration_bundle(net, in_plane_shape=(32, 32))
    return str(save_bundle(bundle, tmp_path / "reg.pt"))


@pytest.fixture
def pair(tmp_path):
    """Fixed, moving and moving labels on one oblique 1.5 x 1.5 x 3 mm grid."""
    affine = np.diag([-1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [25.0, -20.0, -12.0]
    moving = blob_volume((28, 30, 8), seed=1)
    labels = (moving > 50).astype(np.int16) + (moving > 90)
    return (write_nifti(tmp_path / "fixed.nii.gz", blob_volume((28, 30, 8)), affine),
            write_nifti(tmp_path / "sub-7_t2.nii.gz", moving, affine),
            write_nifti(tmp_path / "sub-7_labels.nii.gz", labels, affine), affine)


def test_train_source_tiny_run(tmp_path, capsys):
    out = tmp_path / "m.pt"
    code, stdout, err = run(capsys, "reg", "train-source", "--out", out, "--subjects", "0",
                            "--val-subjects", "none", "--eval-subjects", "none", "--steps",
                            "2", "--batch-size", "2", "--threads", "1", "--device", "cpu")
    assert code == 0, err
    assert str(out) in stdout
    bundle, net = load_registration_model(out)
    assert bundle.provenance["summary"]["steps_done"] == 2
    assert bundle.provenance["data"]["train_subjects"] == [0]
    assert bundle.spacing_mm == [2.0, 2.0, 2.0] and bundle.in_plane_shape == [96, 112]
    code, _, err = run(capsys, "reg", "train-source", "--out", out, "--steps", "1")
    assert code == 1 and "already exists" in one_line(err) and str(out) in err


def test_apply_writes_three_volumes_on_the_fixed_grid(tmp_path, capsys, reg_model, pair):
    fixed, moving, labels, affine = pair
    out = tmp_path / "out"
    args = ("reg", "apply", "--model", reg_model, "--fixed", fixed, "--moving", moving,
            "--moving-labels", labels, "--out", out, "--device", "cpu")
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    names = ("sub-7_t2_warped.nii.gz", "sub-7_t2_labels_warped.nii.gz", "sub-7_t2_field.nii.gz")
    for name in names:
        assert str(out / name) in stdout
        image = nib.load(str(out / name))
        assert image.shape[:3] == (28, 30, 8)
        np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    assert nib.load(str(out / names[2])).shape == (28, 30, 8, 3)
    warped_labels = np.asarray(nib.load(str(out / names[1])).dataobj)
    assert warped_labels.dtype.kind == "i" and set(np.unique(warped_labels)) <= {0, 1, 2}
    code, _, err = run(capsys, *args)  # a second run must not replace the outputs
    assert code == 1 and "already exists" in one_line(err)
    assert run(capsys, *args, "--overwrite")[0] == 0


def test_apply_with_the_sitk_baseline(tmp_path, capsys, pair):
    fixed, moving, _, affine = pair
    code, _, err = run(capsys, "reg", "apply", "--method", "sitk", "--fixed", fixed, "--moving",
                       moving, "--out", tmp_path / "o")
    assert code == 0, err
    field = nib.load(str(tmp_path / "o" / "sub-7_t2_field.nii.gz"))
    assert field.shape == (28, 30, 8, 3)
    assert not (tmp_path / "o" / "sub-7_t2_labels_warped.nii.gz").exists()


def test_grid_mismatch_is_one_line_naming_the_moving_file(tmp_path, capsys, reg_model, pair):
    fixed, _, _, affine = pair
    smaller = write_nifti(tmp_path / "small.nii.gz", blob_volume((26, 30, 8)), affine)
    finer_affine = affine.copy()
    finer_affine[0, 0] = -1.0
    finer = write_nifti(tmp_path / "fine.nii.gz", blob_volume((28, 30, 8)), finer_affine)
    for moving in (smaller, finer):
        code, _, err = run(capsys, "reg", "apply", "--model", reg_model, "--fixed", fixed,
                           "--moving", moving, "--out", tmp_path / "o", "--prealign", "off")
        line = one_line(err)
        assert code == 1 and moving in line and "differs from the fixed image" in line
        assert "Traceback" not in err
    code, _, err = run(capsys, "reg", "apply", "--model", reg_model, "--fixed", fixed,
                       "--moving", finer, "--out", tmp_path / "o", "--resample-moving",
                       "--prealign", "off")
    assert code == 0, err
    assert (tmp_path / "o" / "fine_warped.nii.gz").exists()
    # by default the pair is pre-aligned (affine) and other grids are fine
    code, _, err = run(capsys, "reg", "apply", "--model", reg_model, "--fixed", fixed,
                       "--moving", smaller, "--out", tmp_path / "d")
    assert code == 0, err
    assert nib.load(str(tmp_path / "d" / "small_field.nii.gz")).shape == (28, 30, 8, 3)


def test_apply_notes_a_modality_the_model_was_not_trained_on(tmp_path, capsys, reg_model,
                                                             pair):
    fixed, moving, _, _ = pair  # moving: sub-7_t2.nii.gz; the model: T1w only
    code, _, err = run(capsys, "reg", "apply", "--model", reg_model, "--fixed", fixed,
                       "--moving", moving, "--out", tmp_path / "o", "--prealign", "off")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "was trained on" in line]
    assert len(lines) == 1 and reg_model in lines[0] and "not T2w" in lines[0]
    assert "uda reg adapt" in lines[0] and "--method sitk" in lines[0]


def test_bad_volumes_are_one_line_and_nothing_is_written(tmp_path, capsys, reg_model, pair):
    fixed, moving, labels, affine = pair
    flat = write_nifti(tmp_path / "flat.nii.gz", np.full((28, 30, 8), 7.0, np.float32), affine)
    other = affine.copy()
    other[0, 0] = -1.0
    wrong_labels = write_nifti(tmp_path / "wrong_labels.nii.gz",
                               np.zeros((28, 30, 8), np.int16), other)
    for args, name, problem in (
            (("--moving", flat), flat, "constant"),
            (("--moving", moving, "--moving-labels", wrong_labels), wrong_labels,
             "is not on the grid of")):
        out = tmp_path / "never"
        code, _, err = run(capsys, "reg", "apply", "--model", reg_model, "--fixed", fixed,
                           *args, "--out", out)
        line = one_line(err)
        assert code == 1 and name in line, line
        assert problem in line
        assert not out.exists() or not any(out.iterdir())


def test_models_of_the_other_task_are_refused(tmp_path, capsys, reg_model, pair,
                                              tiny_bundle_path):
    fixed, moving, _, _ = pair
    code, _, err = run(capsys, "reg", "apply", "--model", tiny_bundle_path, "--fixed", fixed,
                       "--moving", moving, "--out", tmp_path / "o")
    line = one_line(err)
    assert code == 1 and tiny_bundle_path in line and "not a registration model" in line
    code, _, err = run(capsys, "predict", "--model", reg_model, "--out", tmp_path / "p", fixed)
    line = one_line(err)
    assert code == 1 and reg_model in line and "is a registration model" in line


def test_bad_apply_arguments(tmp_path, capsys, reg_model, pair):
    fixed, moving, _, _ = pair
    base = ("reg", "apply", "--fixed", fixed, "--moving", moving, "--out", tmp_path / "o")
    code, _, err = run(capsys, *base, "--model", reg_model, "--method", "sitk")
    assert code == 1 and "--model is not used" in one_line(err)
    code, _, err = run(capsys, *base)
    assert code == 1 and "--model is required" in one_line(err)
    absent = tmp_path / "absent.nii.gz"
    code, _, err = run(capsys, "reg", "apply", "--model", reg_model, "--fixed", fixed,
                       "--moving", absent, "--out", tmp_path / "o")
    assert code == 1 and str(absent) in one_line(err)
    # the outputs may never replace an input, even with --overwrite
    clash = Path(moving).parent / "sub-7_t2_warped.nii.gz"
    write_nifti(clash, np.zeros((28, 30, 8), np.int16), nib.load(moving).affine)
    before = clash.read_bytes()
    code, _, err = run(capsys, "reg", "apply", "--model", reg_model, "--fixed", fixed,
                       "--moving", moving, "--out", clash.parent, "--moving-labels", clash,
                       "--overwrite")
    assert code == 1 and "would overwrite the input" in one_line(err)
    assert clash.read_bytes() == before


def test_refine_3d_bare_flag_forces_it_and_off_skips_it(tmp_path, capsys, reg_model, pair):
    fixed, moving, _, _ = pair
    base = ("reg", "apply", "--model", reg_model, "--fixed", fixed, "--moving", moving,
            "--device", "cpu", "--refine-iterations", "0")
    code, _, forced = run(capsys, *base, "--out", tmp_path / "on", "--refine-3d")
    assert code == 0, forced
    assert "note: 3D refinement (50 steps" in forced and "head voxels (3D)" in forced
    code, _, skipped = run(capsys, *base, "--out", tmp_path / "off", "--refine-3d", "off")
    assert code == 0, skipped
    assert "3D refinement" not in skipped and "not refined in 3D" not in skipped
