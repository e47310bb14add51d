"""An adaptation with intensity standardisation: the adapted bundle standardises every scan
it is applied to, so applying it again reproduces the run's masks; "auto" standardises only
when the source model scores better on the standardised scans, and says so."""

from __future__ import annotations

import json

import numpy as np
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
                             engine_settings=ENGINE, device="cpu", standardise="on")
    assert summary["standardised"] and summary["steps_done"] == 1
    assert summary["standardisation"] == {"mode": "on"}
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


@pytest.mark.parametrize("helps", [True, False])
def test_auto_standardises_only_when_both_scores_say_it_helps(tmp_path, tiny_scan,
                                                              monkeypatch, helps):
    from uda_core.tasks import standardisation

    calls = []

    def fake_scores(network, slices, num_classes, device):
        calls.append(slices)             # per target: the plain slices, then the standardised
        better = (len(calls) % 2 == 0) == helps
        return {"consistency": 0.9 if better else 0.8, "entropy": 0.2 if better else 0.3}

    monkeypatch.setattr(standardisation, "slice_scores", fake_scores)
    model = _model(tmp_path, intensity_reference={"percentiles": [0.0, 50.0, 100.0],
                                                  "values": [-1.5, 0.0, 1.5]})
    notes: list[str] = []
    summary = run_adaptation(model, "standardise", [tiny_scan], tmp_path / "run",
                             engine_settings=ENGINE, device="cpu", note=notes.append)
    assert summary["standardised"] is helps
    verdict = summary["standardisation"]
    assert verdict["used"] is helps and verdict["volumes"] == 1
    assert notes == [verdict["line"]]
    assert verdict["line"].startswith("intensities standardised" if helps
                                      else "intensities left as they are")
    assert is_standardised(load_model(summary["adapted_model"])) is helps
    assert len(calls) == 2


def test_slice_scores_of_a_network_that_ignores_its_input():
    from uda_core.tasks.standardisation import slice_scores

    class Constant(torch.nn.Module):   # every pixel: softmax of (0, log 3) = (1/4, 3/4)
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
            logits[:, 1] = float(np.log(3.0))
            return logits

    scores = slice_scores(Constant(), np.random.default_rng(0).normal(
        size=(3, 8, 8)).astype(np.float32), 2, torch.device("cpu"))
    entropy = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)) / np.log(2.0)
    assert scores["consistency"] == 1.0
    assert scores["entropy"] == pytest.approx(entropy, rel=1e-5)


def test_standardise_modes():
    from uda_core.runs.adapt import standardise_mode

    assert [standardise_mode(v, False) for v in (True, False, "on", "auto", "off")] == [
        "auto", "off", "on", "auto", "off"]
    assert standardise_mode(False, True) == "auto" and standardise_mode("on", True) == "on"
    with pytest.raises(ValueError, match="on, auto or off"):
        standardise_mode("always", False)
