"""Labelled source volumes on the model grid: each volume's brain percentiles and whether it
shows a whole head; the intensity reference and the class-ratio prior of a model are taken
from the kind of volume its targets are taken to be."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.synth.test_synth import phantom_template
from uda_core.grid.labelled_slices import load_slices
from uda_core.io.writers import write_volume
from uda_core.models.standardise import intensity_reference
from uda_core.runs.train_segmentation import _intensity_reference, class_ratio_prior
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


def test_the_class_ratio_prior_comes_from_the_kind_of_volume_the_model_takes(head_and_brain):
    slices = load_slices(head_and_brain, (2.0, 2.0, 2.0), (48, 56), NORMALISATION, 4)
    np.testing.assert_array_equal(np.unique(slices.volume_index), [0, 1])
    alone = [load_slices([pair], (2.0, 2.0, 2.0), (48, 56), NORMALISATION, 4)
             for pair in head_and_brain]
    head_prior, brain_prior = (class_ratio_prior(s, 4, 5) for s in alone)
    # the lowest positions of a head are neck (no tissue), of a brain alone its base
    assert head_prior["per_position"][0][0] > brain_prior["per_position"][0][0] + 0.05
    for skull_stripped, expected in ((None, head_prior), (False, head_prior),
                                     (True, brain_prior)):
        assert class_ratio_prior(slices, 4, 5, skull_stripped) == expected
    # a set that does not know which volume a slice comes from averages every slice
    unknown = dataclasses.replace(slices, volume_index=None)
    mixed = class_ratio_prior(unknown, 4, 5)["per_position"][0][0]
    assert head_prior["per_position"][0][0] > mixed > brain_prior["per_position"][0][0]
    # a set of brains alone gives a model taking heads the brains' prior (nothing better)
    assert class_ratio_prior(alone[1], 4, 5, False) == brain_prior
