"""The model card's plain words and the clinical method lines (no Qt)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.conftest import make_seg_bundle
from uda_core.methods.catalogue import CLINICAL, EXPERIMENTAL, clinical_line
from uda_core.methods.registry import METHODS
from uda_core.models.bundle import load_model
from uda_core.models.bundle.plain import modality_words, plain_description
from uda_core.scores.registration import CONTRAST_MISMATCH_R, pair_similarity

TECHNICAL = ("unet2d", "in_channels", "percentile_zscore", "axis 2", "discrete_regnet", "RAS")


def test_the_demo_models_in_plain_words():
    seg = " ".join(plain_description(load_model("demo:brain-t1")))
    assert "cerebrospinal fluid (CSF), grey matter and white matter" in seg
    assert "T1-weighted whole-head scans" in seg and "2 mm" in seg
    assert "Original network" in seg
    reg = " ".join(plain_description(load_model("demo:reg-t1", task=None)))
    assert reg.startswith("Aligns one scan onto another") and "T1-weighted" in reg
    for word in TECHNICAL:
        assert word not in seg and word not in reg


def test_an_adapted_bundle_says_how(tiny_bundle_path):
    bundle = load_model(tiny_bundle_path)
    bundle.provenance = {"method": "sfda", "date": "2026-12-01T10:00:00+00:00"}
    assert plain_description(bundle)[-1] == "Adapted with sfda on 2026-12-01."
    assert modality_words("T2w") == "T2-weighted" and modality_words("odd") == "odd"


def test_every_method_has_a_clinical_line():
    assert set(CLINICAL) == set(METHODS)
    assert clinical_line("ddm", recommended=True).startswith("ddm (recommended): ")
    for name in EXPERIMENTAL:
        assert clinical_line(name).startswith(f"{name} (experimental): ")


def test_pair_similarity_tells_opposite_contrasts_apart():
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grid))
    head = np.where(r < 0.8, 100.0, 2.0) - np.where(r < 0.4, 40.0, 0.0)
    fixed = head + rng.normal(0, 2, head.shape)
    same = head + rng.normal(0, 2, head.shape)
    inverted = np.where(r < 0.8, 160.0 - head, 2.0) + rng.normal(0, 2, head.shape)
    alike, opposite = pair_similarity(fixed, same), pair_similarity(fixed, inverted)
    assert alike["correlation"] > 0.9 and opposite["correlation"] < CONTRAST_MISMATCH_R
    # mutual information sees the shared anatomy whatever the contrasts
    assert alike["mutual_info"] > 1.05 and opposite["mutual_info"] > 1.05


def test_network_lines_say_2d_or_3d_where_from_and_what_is_not_supported():
    from uda_core.models.bundle.plain import network_lines

    seg = make_seg_bundle()
    assert network_lines(seg) == ["2D network: slice by slice, 4 classes, 1 input channel."]
    window = {"roi_size": [48, 48, 48], "overlap": 0.5, "mode": "gaussian", "mirror_axes": [],
              "axes": [0, 1, 2]}
    kwargs = {"spatial_dims": 3, "in_channels": 4, "out_channels": 4, "channels": [4, 8],
              "strides": [2]}
    volume = dataclasses.replace(seg, architecture="monai.UNet", arch_kwargs=kwargs, dims=3,
                                 window=window, imported={"format": "nnunet-v2",
                                                          "name": "Brains"})
    assert network_lines(volume) == [
        "3D network: 48 x 48 x 48 voxel windows, 4 classes, 4 input channels.",
        "Imported from an nnU-Net v2 result folder (Brains).",
        "Not supported yet: 4 input channels (UDA Studio gives the network one scan at a "
        "time)."]
