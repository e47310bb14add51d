"""`uda train-source --dims 3`: a small 3D MONAI UNet on the demo volumes, a 3D bundle out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uda_core.cli import main
from uda_core.io.readers import read_volume
from uda_core.models.bundle import describe, load_model

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo" / "t1"


@pytest.mark.slow  # ~90 s on the shared 2-core machine (3D validation by sliding window)
def test_train_source_dims_3_writes_a_3d_bundle_that_predicts(tmp_path):
    out = tmp_path / "model3d.pt"
    assert main(["train-source", "--dims", "3", "--steps", "3", "--roi", "32", "--batch-size",
                 "1", "--channels", "4,8,16", "--device", "cpu", "--out", str(out), str(DEMO)]) == 0
    bundle = load_model(out)
    assert bundle.dims == 3 and bundle.architecture == "monai.UNet"
    assert bundle.window["roi_size"] == [32, 32, 32]
    assert bundle.arch_kwargs["channels"] == [4, 8, 16]
    assert bundle.arch_kwargs["strides"] == [2, 2]
    prior = bundle.class_ratio_prior
    assert len(prior["constant"]) == 4 and abs(sum(prior["constant"]) - 1) < 1e-6
    assert len(prior["per_position"]) == 10
    low, high = prior["per_position"][0], prior["per_position"][-1]
    assert low != high  # patches at the top of the head hold other shares than low ones
    assert bundle.provenance["method"] == "supervised-source-3d"
    assert any(line.startswith("Dimensions: 3D") for line in describe(bundle))
    masks = tmp_path / "masks"
    scan = DEMO / "sub-102_t1.nii.gz"
    assert main(["predict", "--model", str(out), "--out", str(masks), "--overlap", "0",
                 str(scan)]) == 0
    mask = read_volume(masks / "sub-102_t1_seg.nii.gz")
    assert mask.shape == read_volume(scan).shape and np.all(mask.data <= 3)
    # sfda on 3D patches with the per-patch prior
    settings = tmp_path / "engine.json"
    settings.write_text(json.dumps({"engine": {"batch_size": 2, "score_every": 2}}))
    adapted = tmp_path / "sfda"
    assert main(["adapt", "--model", str(out), "--method", "sfda", "--steps", "2", "--out",
                 str(adapted), "--device", "cpu", "--config", str(settings), "--no-masks",
                 str(scan)]) == 0
    steps = [json.loads(line) for line in (adapted / "metrics.jsonl").read_text().splitlines()]
    kl = [r["loss/kl_prior"] for r in steps if "loss/kl_prior" in r]
    assert len(kl) == 2 and all(np.isfinite(kl))


@pytest.mark.parametrize("channels", ["16", "16,x", "0,8", ""])
def test_train_source_dims_3_refuses_bad_channels(tmp_path, capsys, channels):
    out = tmp_path / "model3d.pt"
    assert main(["train-source", "--dims", "3", "--channels", channels, "--device", "cpu",
                 "--out", str(out), str(DEMO)]) != 0
    assert "--channels needs 2 or more positive integers" in capsys.readouterr().err
    assert not out.exists()
