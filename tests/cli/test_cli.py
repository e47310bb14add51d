"""The `uda` command end to end on tiny data, and every bad input giving one clear line."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_writes_mask_on_the_input_grid_for_oblique_lps_anisotropic(
        tmp_path, capsys, tiny_bundle_path):
    angle = np.deg2rad(12)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1, -1, 1]) @ rot @ np.diag([1.2, 1.2, 3.0])  # LPS, oblique
    affine[:3, 3] = [20.0, 30.0, -15.0]
    scan = write_nifti(tmp_path / "oblique.nii", blob_volume((30, 34, 10)), affine)
    code, out, err = run(capsys, "predict", "--model", tiny_bundle_path, "--out",
                         tmp_path / "out", "--device", "cpu", scan)
    assert code == 0, err
    result = nib.load(str(tmp_path / "out" / "oblique_seg.nii.gz"))
    assert result.shape == (30, 34, 10)
    np.testing.assert_allclose(result.affine, affine, atol=1e-5)
    assert result.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2, 3}


def test_predict_refuses_to_overwrite_without_asking(tmp_path, capsys, tiny_bundle_path,
                                                     tiny_scan):
    args = ("predict", "--model", tiny_bundle_path, "--out", tmp_path / "o", tiny_scan)
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 1 and "already exists" in err and "scan_seg.nii.gz" in err
    assert run(capsys, *args, "--overwrite")[0] == 0


def test_predict_never_writes_onto_an_input(tmp_path, capsys, tiny_bundle_path):
    a = write_nifti(tmp_path / "a.nii.gz", blob_volume())
    a_seg = write_nifti(tmp_path / "a_seg.nii.gz", blob_volume(seed=1))
    before = Path(a_seg).read_bytes()
    code, _, err = run(capsys, "predict", "--model", tiny_bundle_path, "--out", tmp_path,
                       "--overwrite", a, a_seg)
    assert code == 1 and "would overwrite an input" in err
    assert Path(a_seg).read_bytes() == before


def test_evaluate_reports_dice_and_distances(tmp_path, capsys):
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 2
    labels[6:10, 6:10, 6:10] = 3
    ref = write_nifti(tmp_path / "ref.nii.gz", labels)
    code, out, err = run(capsys, "evaluate", "--labels", ref, "--json", ref)
    assert code == 0, err
    assert '"mean_dice": 1.0' in out


def test_models_lists_builtin_names(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "demo:brain-t1" in out


# --- bad inputs: exit 1, one line on stderr naming the file --------------------------------

def _truncated(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", blob_volume())
    data = Path(good).read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_named_nii(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is not an image\n" * 20)
    return path


def _corrupt_gzip(tmp_path):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100)[:10] + os.urandom(200))
    return path


def _four_d(tmp_path):
    return write_nifti(tmp_path / "series4d.nii.gz", np.zeros((8, 8, 8, 3), np.float32))


def _single_slice(tmp_path):
    return write_nifti(tmp_path / "slice.nii.gz", blob_volume((16, 16, 1)))


def _zero_axis(tmp_path):
    path = tmp_path / "empty_axis.nii"
    header = nib.Nifti1Header()
    header.set_data_shape((16, 16, 0))
    header.set_data_dtype(np.float32)
    with open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 4)
    return path


def _nan_voxels(tmp_path):
    data = blob_volume()
    data[3, 4, 5] = np.nan
    data[1, 1, 1] = np.inf
    return write_nifti(tmp_path / "nan.nii.gz", data)


def _empty_dicom_folder(tmp_path):
    path = tmp_path / "dicom_empty"
    path.mkdir()
    return path


def _too_large(tmp_path):
    path = tmp_path / "huge.nii"
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    with open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 64)
    return path


BAD_SCANS = {
    "truncated": (_truncated, "truncated.nii.gz"),
    "text named .nii": (_text_named_nii, "notes.nii"),
    "corrupt gzip": (_corrupt_gzip, "corrupt.nii.gz"),
    "4D": (_four_d, "series4d.nii.gz"),
    "single slice": (_single_slice, "slice.nii.gz"),
    "zero-length axis": (_zero_axis, "empty_axis.nii"),
    "NaN/Inf": (_nan_voxels, "nan.nii.gz"),
    "empty DICOM folder": (_empty_dicom_folder, "dicom_empty"),
    "too large for memory": (_too_large, "huge.nii"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCANS))
def test_bad_scan_gets_one_clear_line(case, tmp_path, capsys, tiny_bundle_path):
    make, name = BAD_SCANS[case]
    bad = make(tmp_path)
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "predict", "--model", tiny_bundle_path, "--out", out_dir, bad)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert name in lines[0] and "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing half-written


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _random_bytes_model(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    return path, "random.pt"


def _pickle_with_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "uda-studio-bundle", "payload": _Payload(str(tmp_path / "PWNED"))},
               path)
    return path, "evil.pt"


def _plain_pickle_with_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Payload(str(tmp_path / "PWNED"))))
    return path, "evil.pkl"


def _other_architecture(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "uda-studio-bundle", "format_version": 1,
                "architecture": {"name": "unet2d", "kwargs": {"num_classes": 4}},
                "state_dict": {"fc.weight": torch.zeros(3, 3)},
                "class_names": ["background", "CSF", "GM", "WM"]}, path)
    return path, "other.pt"


BAD_MODELS = {"random bytes": _random_bytes_model, "pickle with code": _pickle_with_code,
              "plain pickle with code": _plain_pickle_with_code,
              "other architecture": _other_architecture}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_gets_one_clear_line_and_never_runs_code(case, tmp_path, capsys, tiny_scan):
    bad, name = BAD_MODELS[case](tmp_path)
    code, _, err = run(capsys, "predict", "--model", bad, "--out", tmp_path / "out",
                       tiny_scan)
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and name in err
    assert not (tmp_path / "PWNED").exists()


def test_missing_input_and_unknown_builtin(tmp_path, capsys, tiny_bundle_path):
    code, _, err = run(capsys, "predict", "--model", tiny_bundle_path, "--out", tmp_path,
                       tmp_path / "nope.nii.gz")
    assert code == 1 and "nope.nii.gz" in err and "does not exist" in err
    code, _, err = run(capsys, "predict", "--model", "demo:nonexistent", "--out", tmp_path,
                       tmp_path / "nope.nii.gz")
    assert code == 1
