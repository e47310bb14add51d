"""Targets of one `uda adapt` run that disagree: in contrast (a T1 and a T2 scan together)
one warning line naming the odd file(s) and what differs (a warning, not a refusal: see
uda_core.models.input_checks); in orientation nothing to say, since every target is put on the
model grid in one orientation (shown: a reoriented copy gives the same slices)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from uda_core.cli import main
from uda_core.io.readers import read_volume
from uda_core.models.bundle import load_model
from uda_core.models.inference import prepare_for_bundle
from uda_core.models.input_checks import contrast_disagreement
from uda_core.synth.demo_files import demo_set


def test_names_of_different_contrasts_are_a_disagreement():
    line = contrast_disagreement(["sub-1_T1w.nii.gz", "sub-2_t1.nii.gz", "sub-3_T2w.nii.gz"])
    assert line is not None and "sub-3_T2w.nii.gz (named T2w)" in line
    assert "sub-1" not in line.split("unlike")[0] and "the other 2 targets (named T1w)" in line
    assert contrast_disagreement(["a_T1w.nii.gz", "b_T1w.nii.gz", "c.nii.gz"]) is None
    assert contrast_disagreement(["a_T2w.nii.gz"]) is None


def test_a_t1_and_a_t2_scan_as_targets_give_one_warning_line(tmp_path, capsys):
    """Neutral file names: the model's recognition tells the T2 scan apart."""
    t1, t2 = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    shutil.copy(demo_set("t2").paired[0], t1)
    shutil.copy(demo_set("t2").targets[1], t2)
    out = tmp_path / "run"
    code = main(["adapt", "--model", "demo:brain-t1", "--method", "tent", "--steps", "1",
                 "--batch-size", "2", "--no-masks", "--device", "cpu", "--out", str(out),
                 str(t1), str(t2)])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    warnings = [x for x in err.splitlines() if x.startswith("uda adapt: warning:")]
    assert len(warnings) == 1, err
    odd, other = warnings[0].split("unlike")
    assert "b.nii.gz" in odd and "a.nii.gz" not in odd and "a.nii.gz" in other
    assert "disagree in contrast" in odd and "brain tissue in only" in odd
    assert json.loads((out / "run.json").read_text())["warnings"] == [
        warnings[0].removeprefix("uda adapt: warning: ")]


def _reoriented(source, path):
    """The same scan stored in another orientation (axes permuted and flipped: ALI)."""
    image = nib.load(source)
    start = nib.orientations.io_orientation(image.affine)
    turn = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt("ALI"))
    nib.save(image.as_reoriented(turn), path)
    return path


@pytest.mark.parametrize("domain", ["t1", "t2"])
def test_targets_in_different_orientations_agree(tmp_path, domain):
    bundle = load_model("demo:brain-t1")
    scan = demo_set("t2").paired[0] if domain == "t1" else demo_set("t2").targets[0]
    turned = _reoriented(scan, tmp_path / "turned.nii.gz")
    assert nib.aff2axcodes(nib.load(turned).affine) != nib.aff2axcodes(nib.load(scan).affine)
    slices = [prepare_for_bundle(bundle, read_volume(p), None).slices for p in (scan, turned)]
    np.testing.assert_allclose(slices[0], slices[1], atol=1e-3)   # float32 resampling
    network = bundle.build_network("cpu")
    assert contrast_disagreement([scan, turned], slices, network, torch.device("cpu")) is None
