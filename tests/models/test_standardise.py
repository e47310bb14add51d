"""Intensity standardisation: quantile matching, the bundle's source reference, and its use
when a scan is prepared for a standardised bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion

from tests.conftest import make_seg_bundle
from uda_core.errors import ModelError
from uda_core.io import Volume
from uda_core.io.intensity import match_quantiles, region_quantiles
from uda_core.models import inference
from uda_core.models.bundle import describe, load_model, save_bundle
from uda_core.models.standardise import intensity_reference, is_standardised, standardised

REFERENCE = {"percentiles": [0.5, 50.0, 99.5], "values": [-1.0, 0.0, 2.0]}


def test_match_quantiles_maps_landmarks_exactly_and_linearly_between():
    own = np.array([0.0, 1.0, 3.0])
    ref = np.array([10.0, 20.0, 21.0])
    values = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    assert np.allclose(match_quantiles(values, own, ref), [10.0, 15.0, 20.0, 20.5, 21.0])


def test_match_quantiles_shifts_values_beyond_the_ends_with_slope_one():
    out = match_quantiles(np.array([-2.0, 5.0]), np.array([0.0, 3.0]), np.array([1.0, 2.0]))
    assert np.allclose(out, [-1.0, 4.0])


def test_match_quantiles_survives_tied_landmarks():
    out = match_quantiles(np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.0, 2.0]),
                          np.array([0.0, 1.0, 3.0]))
    assert np.all(np.isfinite(out)) and np.all(np.diff(out) >= 0)
    assert out[-1] == pytest.approx(3.0)


def test_match_quantiles_refuses_mismatched_landmarks():
    with pytest.raises(ValueError):
        match_quantiles(np.zeros(3), np.zeros(2), np.zeros(3))


def test_region_quantiles_uses_only_the_region():
    values = np.array([[0.0, 1.0], [2.0, 100.0]])
    region = np.array([[True, True], [True, False]])
    assert np.allclose(region_quantiles(values, region, [0.0, 50.0, 100.0]), [0.0, 1.0, 2.0])


def test_intensity_reference_is_the_mean_row():
    ref = intensity_reference([np.array([0.0, 1.0]), np.array([2.0, 3.0])], [10.0, 90.0])
    assert ref == {"percentiles": [10.0, 90.0], "values": [1.0, 2.0]}


def test_standardised_needs_a_reference_and_keeps_it_in_the_normalisation():
    with pytest.raises(ModelError, match="no source intensity reference"):
        standardised(make_seg_bundle())
    bundle = make_seg_bundle(intensity_reference=REFERENCE)
    assert not is_standardised(bundle)
    done = standardised(bundle)
    assert is_standardised(done) and done.normalisation["match_quantiles"] == REFERENCE
    assert "match_quantiles" not in bundle.normalisation   # the original is untouched
    assert standardised(done) is done


def test_reference_round_trip_and_refusal(tmp_path):
    path = save_bundle(standardised(make_seg_bundle(intensity_reference=REFERENCE)),
                       tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.intensity_reference == REFERENCE and is_standardised(loaded)
    assert any("standardised" in line for line in describe(loaded))
    bad = make_seg_bundle(intensity_reference={"percentiles": [50.0, 10.0], "values": [0, 1]})
    with pytest.raises(ModelError, match="percentiles must increase"):
        save_bundle(bad, tmp_path / "bad.pt")


class _AboveFloorIsBrain(torch.nn.Module):
    """A 'network' that labels class 1 (brain) every pixel above the volume's floor (so the
    model grid's fill outside the scan is background)."""

    def __init__(self, floor: float) -> None:
        super().__init__()
        self.floor = floor

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 2, *x.shape[2:])
        logits[:, 1] = (x[:, 0] > self.floor + 1e-4).float()
        return logits


def test_prepared_scan_of_a_standardised_bundle_has_the_source_percentiles(monkeypatch):
    monkeypatch.setattr(inference, "STANDARDISE_PASSES", 1)
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 100.0, size=(20, 24, 6)).astype(np.float32) + 50.0
    volume = Volume(data=data, affine=np.diag([4.0, 4.0, 4.0, 1.0]))
    bundle = standardised(make_seg_bundle(intensity_reference={
        "percentiles": [1.0, 25.0, 50.0, 75.0, 99.0], "values": [-2.0, -0.5, 0.0, 0.7, 2.5]}))
    plain = inference.prepare_volume(volume, bundle.spacing_mm, bundle.in_plane_shape,
                                     bundle.normalisation)
    floor = float(plain.slices.min())
    inside = plain.slices > floor + 1e-4
    ready = inference.prepare_for_bundle(bundle, volume, _AboveFloorIsBrain(floor))
    # the found brain's percentiles land on the reference
    assert not np.allclose(ready.slices, plain.slices)
    assert np.allclose(region_quantiles(ready.slices, inside, [1.0, 25.0, 50.0, 75.0, 99.0]),
                       [-2.0, -0.5, 0.0, 0.7, 2.5], atol=0.01)


def test_a_standardised_bundle_corrects_the_bias_field_and_older_ones_do_not(tmp_path):
    bundle = make_seg_bundle(intensity_reference=REFERENCE)
    assert standardised(bundle).normalisation["bias_field"] == "n4"
    older = make_seg_bundle(intensity_reference=REFERENCE,
                            normalisation=dict(bundle.normalisation, match_quantiles=REFERENCE))
    assert is_standardised(older) and "bias_field" not in older.normalisation
    assert load_model(save_bundle(older, tmp_path / "old.pt")).normalisation == \
        older.normalisation
    wrong = make_seg_bundle(normalisation=dict(bundle.normalisation, bias_field="n3"))
    with pytest.raises(ModelError, match="bias_field"):
        save_bundle(wrong, tmp_path / "wrong.pt")


def test_preparing_for_a_standardised_bundle_divides_out_the_field():
    z, x, y = np.meshgrid(*(np.linspace(-1, 1, n) for n in (24, 28, 24)), indexing="ij")
    ball = np.sqrt(z ** 2 + x ** 2 + y ** 2) < 0.8
    data = np.where(ball, 100.0, 1.0) * np.exp(0.5 * y)
    volume = Volume(data=data.astype(np.float32), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    bundle = make_seg_bundle(intensity_reference=REFERENCE)
    plain = inference.prepare_plain(bundle, volume)
    corrected = inference.prepare_plain(standardised(bundle), volume)
    tissue = binary_erosion(corrected.slices > corrected.slices.min() + 0.5, iterations=2)

    def spread(slices):     # the ball's spread over its contrast to the air
        return float(slices[tissue].std() / (slices[tissue].mean() - slices.min()))

    assert spread(corrected.slices) < 0.5 * spread(plain.slices)
