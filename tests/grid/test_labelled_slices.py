"""Labelled source volumes on the model grid: each volume's brain percentiles and whether it
shows a whole head; the intensity reference of a model is taken from the kind of volume its
targets are standardised as."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synth.test_synth import phantom_template
from uda_core.grid.labelled_slices import load_slices
from uda_core.io.writers import write_volume
from uda_core.models.standardise import intensity_reference
from uda_core.runs.train_segmentation import _intensity_reference
from uda_core.synth.domains import make_subject

NORMALISATION = {"kind": "percentile_zscore", "lower_percentile": 0.5,
                 "upper_percentile": 99.5, "foreground": "otsu"}


@pytest.fixture(scope="module")
def head_and_brain(tmp_path_factory):
    """(image, labels) paths of one simulated subject as a whole head and as a brain alone."""
    folder = tmp_path_factory.mktemp("slices")
    template = phantom_template()
    pairs = []
    for heads in (True, False):
        image, labels = make_subject(3, domains=("t1",), seed=1, template=template,
                                     heads=heads)["t1"]
        stem = folder / ("head" if heads else "brain")
        pairs.append((write_volume(image, f"{stem}_t1.nii.gz"),
                      write_volume(labels, f"{stem}_labels.nii.gz")))
    return pairs


def test_whole_heads_are_told_from_skull_stripped_brains(head_and_brain):
    slices = load_slices(head_and_brain, (2.0, 2.0, 2.0), (48, 56), NORMALISATION, 4)
    assert slices.whole_head.tolist() == [True, False]
    assert slices.volume_quantiles.shape == (2, 17)
    # normalised over a whole head vs over the brain alone: the brain's darkest landmark moves
    assert abs(slices.volume_quantiles[0, 0] - slices.volume_quantiles[1, 0]) > 0.1


def test_the_reference_comes_from_the_kind_of_volume_the_model_takes(head_and_brain):
    slices = load_slices(head_and_brain, (2.0, 2.0, 2.0), (48, 56), NORMALISATION, 4)
    head, brain = slices.volume_quantiles
    for skull_stripped, expected in ((None, head), (False, head), (True, brain)):
        reference = _intensity_reference(slices, skull_stripped)
        assert reference == intensity_reference([expected])
    # a model trained on brains alone standardises to them, whatever it expects
    only_brains = load_slices(head_and_brain[1:], (2.0, 2.0, 2.0), (48, 56), NORMALISATION, 4)
    assert _intensity_reference(only_brains, None) == intensity_reference([brain])
    np.testing.assert_array_equal(only_brains.whole_head, [False])
