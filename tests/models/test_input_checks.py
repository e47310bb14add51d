"""Before Start: one line per mismatch between a scan and the model (skull, contrast)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from uda_core.io import Volume
from uda_core.io.readers import read_volume
from uda_core.models.bundle import load_model
from uda_core.models.input_checks import (
    foreground_litres,
    input_mismatches,
    named_contrast,
)
from uda_core.synth.demo_files import demo_set


def _ball(radius_mm: float, spacing: float = 2.0) -> Volume:
    """A bright ball in noisy air: its foreground is 4/3 pi r^3."""
    n = int(2.6 * radius_mm / spacing)
    axis = (np.arange(n) - n / 2) * spacing
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    rng = np.random.default_rng(0)
    data = (x ** 2 + y ** 2 + z ** 2 < radius_mm ** 2) * 100.0 + rng.normal(5, 1, x.shape)
    return Volume(data.astype(np.float32), np.diag([spacing] * 3 + [1.0]))


def test_foreground_litres_measures_the_tissue():
    ball = _ball(70.0)   # 1.44 L
    assert foreground_litres(ball) == pytest.approx(4 / 3 * np.pi * 0.7 ** 3, rel=0.05)


@pytest.mark.parametrize("name, contrast", [
    ("sub-01_T2w.nii.gz", "T2w"), ("sub-01_ses-1_T1w.nii", "T1w"), ("x_flair.mha", "FLAIR"),
    ("sub-100_t2.nii.gz", "T2w"), ("scan.nii.gz", None), ("ch2.nii.gz", None),
    ("t1_and_t2.nii.gz", None)])
def test_the_contrast_a_file_is_named_for(name, contrast):
    assert named_contrast(name) == contrast


def test_a_dicom_series_description_names_its_contrast():
    volume = Volume(np.zeros((2, 2, 2)), np.eye(4), meta={"series_description": "AX FLAIR"})
    assert named_contrast("IMG0001", volume) == "FLAIR"


def test_whole_head_for_a_skull_stripped_model_and_a_t2_scan_for_a_t1_model():
    bundle = load_model("demo:brain-t1")
    network = bundle.build_network("cpu")
    needs_stripped = dataclasses.replace(bundle, skull_stripped_input=True)
    t1, t2 = demo_set("t1").targets[0], demo_set("t2").targets[0]
    head = read_volume(t1)
    # the demo model segments whole heads: a T1w head is fine for it
    assert input_mismatches(bundle, head, t1, network) == []
    lines = input_mismatches(needs_stripped, head, t1, network)
    assert len(lines) == 1 and "skull" in lines[0] and "sub-100_t1" in lines[0]
    lines = input_mismatches(bundle, read_volume(t2), t2, network)
    assert len(lines) == 1 and "contrast (named T2w) looks unlike its T1w" in lines[0]
