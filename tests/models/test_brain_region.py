"""Brain extraction's clean-up (uda_core.models.brain_region): one component, holes filled,
only for bundles that segment whole heads; `segment_volume` applies it on the input grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import make_seg_bundle
from uda_core.io import Volume
from uda_core.models.brain_region import clean_brain_region, extracts_brain, label_map
from uda_core.models.inference import segment_volume

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _probs(labels: np.ndarray, classes: int = 4, second: int | None = None) -> np.ndarray:
    """One-hot-ish probabilities (C, ...) whose argmax is `labels`; `second` the runner-up."""
    probs = np.full((classes,) + labels.shape, 0.05, dtype=np.float32)
    if second is not None:
        probs[second] = 0.2
    for c in range(classes):
        probs[c][labels == c] = 0.7
    return probs


def test_island_removed_hole_filled_with_most_probable_tissue():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[4:14, 4:14, 4:14] = 2                 # the brain (GM)
    labels[8:10, 8:10, 8:10] = 0                 # a pocket of background inside it
    labels[17:19, 17:19, 17:19] = 1              # an island of "CSF" in the scalp
    probs = _probs(labels, second=3)             # runner-up WM everywhere
    out = label_map(probs, brain=True)
    assert out[17:19, 17:19, 17:19].max() == 0   # island gone
    assert (out[8:10, 8:10, 8:10] == 3).all()    # pocket gets its best tissue class (WM)
    keep = np.ones(labels.shape, bool)
    keep[17:19, 17:19, 17:19] = keep[8:10, 8:10, 8:10] = False
    np.testing.assert_array_equal(out[keep], labels[keep])   # the rest unchanged
    np.testing.assert_array_equal(label_map(probs), probs.argmax(0))   # brain=False: argmax


def test_no_tissue_and_a_single_component_are_left_alone():
    empty = np.zeros((6, 6, 6), np.uint8)
    assert not clean_brain_region(empty.copy(), _probs(empty)).any()
    one = np.zeros((6, 6, 6), np.uint8)
    one[1:4, 1:4, 1:4] = 3
    np.testing.assert_array_equal(clean_brain_region(one.copy(), _probs(one)), one)


@pytest.mark.parametrize(("value", "expected"), [(False, True), (True, False), (None, False)])
def test_only_whole_head_bundles_extract_a_brain(value, expected):
    assert extracts_brain(make_seg_bundle(skull_stripped_input=value)) is expected


class _TwoBlobs(torch.nn.Module):
    """A "network" labelling bright pixels tissue: class 1 logit = intensity."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 4 * x, x - 9, x - 9], dim=1)


def test_segment_volume_cleans_whole_head_bundles_only():
    data = np.zeros((24, 24, 12), np.float32)
    data[4:14, 4:14, 3:9] = 1.0                  # the brain
    data[18:21, 18:21, 5:7] = 1.0                # a bright island apart from it
    volume = Volume(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    normalisation = {"kind": "none"}
    plain = make_seg_bundle(in_plane_shape=[24, 24], normalisation=normalisation)
    head = make_seg_bundle(in_plane_shape=[24, 24], normalisation=normalisation,
                           skull_stripped_input=False)
    net = _TwoBlobs()
    kept = segment_volume(plain, net, volume, torch.device("cpu")).data
    cleaned = segment_volume(head, net, volume, torch.device("cpu")).data
    assert kept.shape == cleaned.shape == data.shape
    assert kept[19, 19, 5:7].all() and not cleaned[18:21, 18:21].any()
    np.testing.assert_array_equal(cleaned[:16, :16], kept[:16, :16])
