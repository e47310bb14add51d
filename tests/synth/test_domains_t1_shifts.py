"""The two harder T1w scanner shifts ("mprage", "highfield") and the Domain fields they use:
pd_scale (per-tissue signal factors) and intensity_gamma (the reconstruction's curve).

Subjects are made on the small ellipsoid phantom of test_synth at 4 mm, so each test is fast.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.synth.test_synth import phantom_template
from uda_core.synth.contrast import intensity_curve
from uda_core.synth.domains import DOMAINS, Domain, make_subject

NEW = ("mprage", "highfield")
OLD_KEYS = {"name", "description", "field_strength", "sequence", "tr_ms", "te_ms", "ti_ms",
            "resolution_mm", "orientation", "bias_strength", "centre_brightening",
            "noise_fraction", "texture_fraction", "gain", "relative_tissue_signal"}


@pytest.fixture(scope="module")
def phantom():
    return phantom_template()


@pytest.fixture(scope="module")
def subject(phantom):
    return make_subject(5, ("t1",) + NEW, spacing_mm=4.0, seed=2, template=phantom)


def _label_means(image, labels) -> list[float]:
    return [float(image.data[labels.data == k].mean()) for k in range(4)]


def test_new_domains_sit_between_protocol_and_t2():
    names = list(DOMAINS)
    assert names[names.index("protocol") + 1: names.index("t2")] == list(NEW)


def test_new_domains_deterministic_per_seed(phantom, subject):
    again = make_subject(5, NEW, spacing_mm=4.0, seed=2, template=phantom)
    other = make_subject(5, NEW, spacing_mm=4.0, seed=3, template=phantom)
    for name in NEW:
        np.testing.assert_array_equal(again[name][0].data, subject[name][0].data)
        np.testing.assert_array_equal(again[name][1].data, subject[name][1].data)
        np.testing.assert_array_equal(again[name][0].affine, subject[name][0].affine)
        assert not np.array_equal(other[name][0].data, subject[name][0].data)


def test_new_domains_are_t1_weighted_with_their_own_contrast(subject):
    t1_rel = DOMAINS["t1"].to_dict()["relative_tissue_signal"]
    mp = DOMAINS["mprage"].to_dict()["relative_tissue_signal"]
    assert mp["WM"] == 1.0 and mp["GM"] < t1_rel["GM"] - 0.2 and mp["CSF"] < 0.2
    hf = DOMAINS["highfield"].to_dict()["relative_tissue_signal"]
    assert hf["WM"] == 1.0 and hf["GM"] > t1_rel["GM"] + 0.1 and hf["CSF"] > t1_rel["CSF"]
    for name in ("t1",) + NEW:
        bg, csf, gm, wm = _label_means(*subject[name])
        assert wm > gm > csf, name
    t1_img, t1_lab = subject["t1"]
    for name in NEW:
        image, labels = subject[name]
        assert image.orientation == DOMAINS[name].orientation != "RAS"
        assert image.shape != t1_img.shape or not np.array_equal(image.affine, t1_img.affine)
        np.testing.assert_array_equal(np.bincount(labels.data.ravel(), minlength=4),
                                      np.bincount(t1_lab.data.ravel(), minlength=4))


def test_pd_scale_scales_tissue_signals_exactly():
    base = Domain(name="x", description="", field_strength="3T", tr_ms=600.0, te_ms=10.0)
    scaled = replace(base, pd_scale=(2.0, 0.5, 1.25))
    for s, b, f in zip(scaled.tissue_signals(), base.tissue_signals(), (2.0, 0.5, 1.25),
                       strict=True):
        assert s == b * f
    assert scaled.head_signals() == base.head_signals()  # non-brain tissues keep theirs
    d = replace(DOMAINS["highfield"], intensity_gamma=1.0).to_dict()
    csf, gm, wm = DOMAINS["highfield"].tissue_signals()
    assert d["relative_tissue_signal"]["GM"] == round(gm / wm, 4)
    assert d["pd_scale"] == [1.0, 1.06, 0.94]


def test_intensity_curve_hand_checked():
    image = np.array([0.0, 1.0, 4.0, 9.0], dtype=np.float32)
    assert intensity_curve(image, 4.0, 1.0) is image  # gamma 1: no computation at all
    curved = intensity_curve(image, 4.0, 0.5)  # 4 * sqrt(x / 4) = 2 sqrt(x)
    assert curved.dtype == np.float32
    np.testing.assert_allclose(curved, [0.0, 2.0, 4.0, 6.0], rtol=1e-6)
    assert curved[2] / curved[1] == pytest.approx(2.0)  # bright/dark ratio 4 -> 4 ** 0.5
    np.testing.assert_allclose(intensity_curve(image, 4.0, 2.0), [0.0, 0.25, 4.0, 20.25],
                               rtol=1e-6)
    with pytest.raises(ValueError):
        intensity_curve(image, 0.0, 0.5)


def test_intensity_gamma_in_subjects(phantom, subject):
    hf = DOMAINS["highfield"]
    linear = replace(hf, intensity_gamma=1.0)  # same name: same bias and noise streams
    same = make_subject(5, (replace(DOMAINS["t1"], intensity_gamma=1.0),), spacing_mm=4.0,
                        seed=2, template=phantom)
    np.testing.assert_array_equal(same["t1"][0].data, subject["t1"][0].data)
    flat = subject["highfield"]
    lin = make_subject(5, (linear,), spacing_mm=4.0, seed=2, template=phantom)["highfield"]
    _, csf_g, _, wm_g = _label_means(*flat)
    _, csf_l, _, wm_l = _label_means(*lin)
    assert wm_g / csf_g < wm_l / csf_l - 0.1  # gamma 0.7 compresses bright / dark
    rel = hf.to_dict()["relative_tissue_signal"]
    lin_rel = linear.to_dict()["relative_tissue_signal"]
    assert rel["CSF"] == pytest.approx(lin_rel["CSF"] ** 0.7, abs=1e-3)


def test_to_dict_keys_and_defaults():
    for name in ("t1", "protocol", "t2", "pd"):
        d = DOMAINS[name].to_dict()
        assert OLD_KEYS <= set(d)
        assert d["pd_scale"] == [1.0, 1.0, 1.0] and d["intensity_gamma"] == 1.0
    for name in NEW:
        assert set(DOMAINS[name].to_dict()) == OLD_KEYS | {"pd_scale", "intensity_gamma"}


def test_invalid_fields_rejected():
    base = DOMAINS["t1"]
    with pytest.raises(ValueError):
        replace(base, pd_scale=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        replace(base, intensity_gamma=0.0)
