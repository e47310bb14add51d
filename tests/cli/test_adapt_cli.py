"""`uda adapt` end to end on tiny volumes: outputs, provenance, and `uda predict` on the result."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import torch

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main
from uda_core.models.bundle import load_model, save_bundle


def _with_prior(bundle_path, tmp_path):
    bundle = load_model(bundle_path)
    bundle.class_ratio_prior = {"constant": [0.7, 0.1, 0.1, 0.1]}
    return str(save_bundle(bundle, tmp_path / "with_prior.pt"))


def test_adapt_writes_bundle_metrics_run_and_masks_that_predict_loads(
        tmp_path, capsys, tiny_bundle_path):
    model = _with_prior(tiny_bundle_path, tmp_path)
    targets = [write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume(seed=i)) for i in range(2)]
    out = tmp_path / "run"
    code = main(["adapt", "--model", model, "--method", "sfda", "--out", str(out),
                 "--steps", "4", "--batch-size", "2", "--select-by", "last", "--device", "cpu",
                 *targets])
    err = capsys.readouterr().err
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] == 4 and run["chosen_step"] == 4
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in lines if "loss/total" in row] == [1, 2, 3, 4]
    assert any("score/consistency" in row for row in lines)

    adapted = load_model(out / "adapted.pt")
    assert adapted.provenance["method"] == "sfda"
    assert adapted.provenance["parent"].endswith("with_prior.pt")
    assert set(adapted.provenance["data_fingerprints"]) == set(targets)
    original = load_model(model)
    assert any(not torch.equal(adapted.state_dict[k], original.state_dict[k])
               for k in original.state_dict)

    for target in targets:
        mask = nib.load(str(out / "masks" / target.split("/")[-1].replace(".nii.gz",
                                                                          "_seg.nii.gz")))
        assert mask.shape == nib.load(target).shape
    code = main(["predict", "--model", str(out / "adapted.pt"), "--out", str(tmp_path / "p"),
                 "--device", "cpu", targets[0]])
    assert code == 0, capsys.readouterr().err
    assert np.asarray(nib.load(str(tmp_path / "p" / "t0_seg.nii.gz")).dataobj).max() <= 3


def test_adapt_names_what_a_method_is_missing_before_running(tmp_path, capsys,
                                                             tiny_bundle_path):
    target = write_nifti(tmp_path / "t.nii.gz", blob_volume())
    code = main(["adapt", "--model", tiny_bundle_path, "--method", "ddm", "--out",
                 str(tmp_path / "run"), target])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert "ddm needs" in err[0] and "source-modality image" in err[0]
    assert not (tmp_path / "run").exists()


def test_adapt_refuses_unknown_settings_in_one_line(tmp_path, capsys, tiny_bundle_path):
    target = write_nifti(tmp_path / "t.nii.gz", blob_volume())
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"learning_rate": 0.1}))
    code = main(["adapt", "--model", tiny_bundle_path, "--method", "tent", "--out",
                 str(tmp_path / "run"), "--config", str(config), target])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "learning_rate" in err[0]


def test_adapt_standardise_says_what_it_did_and_always_forces_it(tmp_path, capsys,
                                                                 tiny_bundle_path):
    bundle = load_model(tiny_bundle_path)
    bundle.intensity_reference = {"percentiles": [1.0, 50.0, 99.0], "values": [-1.5, 0.0, 1.5]}
    model = str(save_bundle(bundle, tmp_path / "with_reference.pt"))
    target = write_nifti(tmp_path / "t0.nii.gz", blob_volume(seed=0))
    common = ["--model", model, "--method", "adabn", "--steps", "1", "--batch-size", "2",
              "--device", "cpu", "--no-masks"]
    assert main(["adapt", *common, "--out", str(tmp_path / "auto"), "--standardise",
                 target]) == 0
    err = capsys.readouterr().err
    run = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert f"uda adapt: {run['standardisation']['line']}" in err
    assert run["standardised"] is run["standardisation"]["used"]
    assert main(["adapt", *common, "--out", str(tmp_path / "on"), "--standardise-always",
                 target]) == 0
    run = json.loads((tmp_path / "on" / "run.json").read_text())
    assert run["standardised"] and run["standardisation"] == {"mode": "on"}
    assert "uda adapt: intensities" not in capsys.readouterr().err
