"""`uda adapt --config` refuses bad settings in one line naming the setting: unknown keys,
wrong types, NaN, out-of-range values."""

from __future__ import annotations

import json

import pytest

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import main

BAD = {
    "unknown key": ({"lr_typo": 1e-4}, "unknown setting"),
    "text for a number": ({"lr": "fast"}, "lr must be a number"),
    "NaN": ({"lr": float("nan")}, "lr must be a finite number"),
    "negative learning rate": ({"lr": -1e-3}, "learning rate"),
    "float steps": ({"engine": {"steps": 2.5}}, "steps must be a whole number"),
    "zero batch": ({"engine": {"batch_size": 0}}, "batch_size must be >= 1"),
    "null flag": ({"engine": {"amp": None}}, "amp needs a value"),
    "unknown engine key": ({"engine": {"stepz": 3}}, "unknown setting"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_settings_get_one_line(case, tmp_path, capsys, tiny_bundle_path):
    settings, expected = BAD[case]
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(settings))   # json writes NaN as NaN
    target = write_nifti(tmp_path / "t.nii.gz", blob_volume())
    out = tmp_path / "run"
    code = main(["adapt", "--model", tiny_bundle_path, "--method", "tent", "--out", str(out),
                 "--config", str(config), "--device", "cpu", target])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert expected in err[0] and "tent" in err[0]
    assert not (out / "adapted.pt").exists()
