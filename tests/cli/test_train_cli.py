"""`uda train-source` end to end on two tiny labelled volumes, with `--augment`."""

from __future__ import annotations

import pytest

from tests.runs.test_train_source import _brain
from uda_core.cli import main


def test_train_source_with_contrast_augmentation_writes_a_bundle_that_says_so(
        tmp_path, capsys):
    from uda_core.models.bundle import load_model

    data = tmp_path / "data"
    _brain(data, "sub-1", 0)
    _brain(data, "sub-2", 1)
    out = tmp_path / "robust.pt"
    code = main(["train-source", "--out", str(out), "--epochs", "1", "--head-epochs", "0",
                 "--batch-size", "8", "--augment", "contrast", "--device", "cpu", str(data)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "validation Dice" in captured.out
    provenance = load_model(out).provenance
    assert provenance["augmentation"]["preset"] == "contrast"
    assert provenance["augmentation"]["settings"]["intensity"] is True


def test_train_source_augment_choices(capsys):
    from uda_core.synth.augment import PRESETS

    with pytest.raises(SystemExit) as exit_info:
        main(["train-source", "--out", "x.pt", "--augment", "heavy", "data"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--augment" in err and all(p in err for p in PRESETS)


def test_train_source_init_fine_tunes_a_model_and_names_its_parent(tmp_path, capsys,
                                                                    tiny_bundle_path):
    from uda_core.models.bundle import load_model

    data = tmp_path / "data"
    _brain(data, "sub-1", 0)
    _brain(data, "sub-2", 1)
    out = tmp_path / "tuned.pt"
    code = main(["train-source", "--out", str(out), "--epochs", "1", "--head-epochs", "0",
                 "--batch-size", "8", "--device", "cpu", "--init", tiny_bundle_path,
                 str(data)])
    assert code == 0, capsys.readouterr().err
    assert load_model(out).provenance["parent"] == tiny_bundle_path


def test_train_source_loss_options_and_snapshots(tmp_path, capsys):
    from uda_core.models.bundle import load_model

    data = tmp_path / "data"
    _brain(data, "sub-1", 0)
    _brain(data, "sub-2", 1)
    out, snaps = tmp_path / "m.pt", tmp_path / "snaps"
    code = main(["train-source", "--out", str(out), "--epochs", "2", "--head-epochs", "0",
                 "--batch-size", "8", "--device", "cpu", "--lr", "3e-4",
                 "--class-weights", "1,2,1,1", "--boundary-weight", "2",
                 "--snapshots", str(snaps), str(data)])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in snaps.iterdir()) == ["epoch01.pt", "epoch02.pt"]
    config = load_model(out).provenance["config"]
    assert config["lr"] == 3e-4 and config["boundary_weight"] == 2.0
    assert list(config["class_weights"]) == [1.0, 2.0, 1.0, 1.0]
    assert load_model(snaps / "epoch01.pt").provenance["summary"] == {"snapshot_epoch": 1}


@pytest.mark.parametrize("weights, message", [
    ("1,x", "--class-weights needs positive numbers"),
    ("1,2", "needs 4 numbers"),
])
def test_train_source_refuses_bad_class_weights(tmp_path, capsys, weights, message):
    data = tmp_path / "data"
    _brain(data, "sub-1", 0)
    _brain(data, "sub-2", 1)
    code = main(["train-source", "--out", str(tmp_path / "m.pt"), "--class-weights", weights,
                 str(data)])
    assert code != 0
    err = capsys.readouterr().err
    assert message in err
    if weights == "1,2":
        assert "background, CSF, GM, WM" in err
