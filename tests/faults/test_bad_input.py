"""Bad input at every entry point gets what `uda predict` gives: one line on stderr naming the
file (or setting) and the problem, exit status 1 (EXIT_USER_ERROR; argparse's own usage
errors exit 2), no traceback, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main


@pytest.fixture
def files(tmp_path, tiny_bundle_path, tiny_reg_model):
    labels = (blob_volume() > 50).astype(np.int16)
    made = {
        "seg": tiny_bundle_path, "reg": tiny_reg_model,
        "scan": write_nifti(tmp_path / "scan.nii.gz", blob_volume()),
        "labels": write_nifti(tmp_path / "labels.nii.gz", labels),
        "float labels": write_nifti(tmp_path / "float.nii.gz", labels * np.float32(1.5)),
        "other grid": write_nifti(tmp_path / "small.nii.gz", np.zeros((10, 10, 10), np.int16)),
        "text": str(tmp_path / "text.nii.gz"),
    }
    (tmp_path / "text.nii.gz").write_text("hello")
    for folder, label_value in (("unlabelled", None), ("unknown", 9)):
        (tmp_path / folder).mkdir()
        for k in (1, 2):
            write_nifti(tmp_path / folder / f"sub-00{k}_t1.nii.gz", blob_volume(seed=k))
            if label_value is not None:
                write_nifti(tmp_path / folder / f"sub-00{k}_labels.nii.gz",
                            labels * label_value)
        made[folder] = str(tmp_path / folder)
    return made


def _settings(tmp_path, content) -> str:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(content))
    return str(path)


def _adapt(f, tmp_path, method, settings):
    return ["adapt", "--model", f["seg"], "--method", method, "--out", str(tmp_path / "o"),
            "--steps", "1", "--device", "cpu", "--config", _settings(tmp_path, settings),
            f["scan"]]


CASES = {
    # uda adapt: settings files (more in tests/cli/test_adapt_bad_settings.py)
    "a prior not summing to one": (lambda f, t: _adapt(f, t, "sfda", {
        "prior_mode": "user", "user_prior": [0.5, 0.5, 0.5, 0.5]}), "user_prior must sum to 1"),
    "a negative prior share": (lambda f, t: _adapt(f, t, "sfda", {
        "prior_mode": "user", "user_prior": [1.5, -0.5, 0, 0]}), "finite and >= 0"),
    "a prior of the wrong length": (lambda f, t: _adapt(f, t, "sfda", {
        "prior_mode": "user", "user_prior": [1.0]}), "must list 4 class shares"),
    "an unknown prior mode": (lambda f, t: _adapt(f, t, "sfda", {
        "prior_mode": "banana", "user_prior": [0.7, 0.1, 0.1, 0.1]}),
        "prior_mode must be one of"),
    "a settings file that is a list": (lambda f, t: _adapt(f, t, "tent", [1, 2]),
                                       "not a table of settings"),
    "an engine entry that is a number": (lambda f, t: _adapt(f, t, "tent", {"engine": 3}),
                                         '"engine" entry must be a table'),
    "a target that is not an image": (lambda f, t: [
        "adapt", "--model", f["seg"], "--method", "tent", "--out", str(t / "o"),
        "--device", "cpu", f["text"]], "text.nii.gz: is not gzip-compressed"),
    "a registration model": (lambda f, t: [
        "adapt", "--model", f["reg"], "--method", "tent", "--out", str(t / "o"),
        "--device", "cpu", f["scan"]], "not a segmentation model"),
    # uda evaluate
    "float labels": (lambda f, t: ["evaluate", "--labels", f["labels"], f["float labels"]],
                     "float.nii.gz: is not a label map"),
    "label maps on different grids": (lambda f, t: [
        "evaluate", "--labels", f["labels"], f["other grid"]], "on another voxel grid"),
    # uda train-source
    "images without labels": (lambda f, t: [
        "train-source", "--out", str(t / "m.pt"), f["unlabelled"]], "has no label file"),
    "labels with unknown classes": (lambda f, t: [
        "train-source", "--out", str(t / "m.pt"), "--epochs", "1", f["unknown"]],
        "holds label(s) 9 outside the 4 classes"),
    # uda reg
    "reg apply: a moving file that is not an image": (lambda f, t: [
        "reg", "apply", "--model", f["reg"], "--fixed", f["scan"], "--moving", f["text"],
        "--out", str(t / "o")], "text.nii.gz"),
    "reg apply: float moving labels": (lambda f, t: [
        "reg", "apply", "--model", f["reg"], "--fixed", f["scan"], "--moving", f["scan"],
        "--moving-labels", f["float labels"], "--out", str(t / "o")], "is not a label map"),
    "reg apply: a segmentation model": (lambda f, t: [
        "reg", "apply", "--model", f["seg"], "--fixed", f["scan"], "--moving", f["scan"],
        "--out", str(t / "o")], "not a registration model"),
    "reg adapt: a missing moving file": (lambda f, t: [
        "reg", "adapt", "--model", f["reg"], "--out", str(t / "o"), "--fixed", f["scan"],
        "--moving", str(t / "nope.nii.gz"), "--device", "cpu"], "nope.nii.gz: does not exist"),
    "reg adapt: text for a number": (lambda f, t: [
        "reg", "adapt", "--model", f["reg"], "--out", str(t / "o"), "--device", "cpu",
        "--config", _settings(t, {"lr": "x"})], "lr must be a number"),
    "reg adapt: a settings file that is a list": (lambda f, t: [
        "reg", "adapt", "--model", f["reg"], "--out", str(t / "o"), "--device", "cpu",
        "--config", _settings(t, [1])], "not a table of settings"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_line_and_exit_1(case, files, tmp_path, capsys):
    make_argv, expected = CASES[case]
    code = main(make_argv(files, tmp_path))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    errors = [x for x in captured.err.splitlines() if ": error: " in x]
    assert code == 1 and len(errors) == 1, captured.err
    assert expected in errors[0], errors[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*.pt"))
    assert not (tmp_path / "m.pt").exists()
