"""`uda train-source --skull-stripped-input / --whole-head-input` is recorded in the bundle."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main
from uda_core.models.bundle import describe, load_model


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    for i in range(2):
        image = blob_volume((20, 24, 6), seed=i)
        write_nifti(folder / f"s{i}.nii.gz", image)
        labels = np.digitize(image, [30.0, 70.0]).astype(np.int16)  # 0, 1, 2
        write_nifti(folder / f"s{i}_labels.nii.gz", labels)
    return folder


@pytest.mark.parametrize(("flag", "recorded"), [
    ("--skull-stripped-input", True), ("--whole-head-input", False), (None, None)])
def test_flag_is_recorded(labelled, tmp_path, capsys, flag, recorded):
    out = tmp_path / "m.pt"
    argv = ["train-source", "--out", str(out), "--epochs", "1", "--head-epochs", "0",
            "--device", "cpu", str(labelled)]
    if flag:
        argv.insert(1, flag)
    assert main(argv) == 0, capsys.readouterr().err
    bundle = load_model(out)
    assert bundle.skull_stripped_input is recorded
    assert any(line.startswith("Skull stripping: ") for line in describe(bundle))


def test_flags_exclude_each_other(labelled, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train-source", "--out", str(tmp_path / "m.pt"), "--skull-stripped-input",
              "--whole-head-input", str(labelled)])
    assert "not allowed with" in capsys.readouterr().err
