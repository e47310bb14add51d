"""An adaptation with intensity standardisation: the adapted bundle standardises every scan
it is applied to, so applying it again reproduces the run's masks."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import make_seg_bundle
from uda_core.errors import ModelError, UdaError
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model, save_bundle
from uda_core.models.inference import segment_volume
from uda_core.models.standardise import is_standardised
from uda_core.runs.adapt import run_adaptation

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

ENGINE = {"batch_size": 2, "score_slices": 4, "skip_empty_slices": False}


def _model(tmp_path, **fields):
    return str(save_bundle(make_seg_bundle(**fields), tmp_path / "model.pt"))


def test_standardise_run_writes_a_standardised_bundle_that_reproduces_its_masks(tmp_path,
                                                                               tiny_scan):
    model = _model(tmp_path, intensity_reference={"percentiles": [1.0, 50.0, 99.0],
                                                  "values": [-1.5, 0.0, 1.5]})
    summary = run_adaptation(model, "standardise", [tiny_scan], tmp_path / "run",
                             engine_settings=ENGINE, device="cpu")
    assert summary["standardised"] and summary["steps_done"] == 1
    assert "standardised input" in summary["outcome"]
    adapted = load_model(summary["adapted_model"])
    assert is_standardised(adapted)
    again = segment_volume(adapted, adapted.build_network(), read_volume(tiny_scan),
                           torch.device("cpu"))
    assert (again.data == read_labels(summary["masks"][0]).data).all()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["kept_source"] in (True, False) and run["selected_by"]


def test_standardise_without_a_reference_is_one_clear_error(tmp_path, tiny_scan):
    model = _model(tmp_path)
    with pytest.raises(UdaError, match="method standardise needs a model bundle that "
                                       "records its source intensity percentiles"):
        run_adaptation(model, "standardise", [tiny_scan], tmp_path / "run",
                       engine_settings=ENGINE, device="cpu")
    with pytest.raises(ModelError, match="records no source intensity reference"):
        run_adaptation(model, "adabn", [tiny_scan], tmp_path / "run2",
                       engine_settings=ENGINE, device="cpu", standardise=True)
