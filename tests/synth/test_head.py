"""Heads around the simulated brains: skull, scalp, eyes, neck; every non-brain voxel is
background in the labels, the brain is unchanged, and the simulation is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from tests.synth.test_synth import phantom_template
from uda_core.synth.contrast import HEAD_TISSUE_PROPERTIES, tissue_signal
from uda_core.synth.domains import DOMAINS, make_subject
from uda_core.synth.head import HEAD_TISSUES, HeadShape, simulate_head


@pytest.fixture(scope="module")
def phantom():
    return phantom_template()


@pytest.fixture(scope="module")
def with_and_without(phantom):
    kwargs = dict(domains=("t1", "t2"), spacing_mm=2.0, seed=1, template=phantom)
    return make_subject(3, heads=True, **kwargs), make_subject(3, heads=False, **kwargs)


def _world_index(volume, reference):
    """Voxel indices of `reference`'s voxels inside `volume` (same spacing, RAS)."""
    offset = np.rint((reference.affine[:3, 3] - volume.affine[:3, 3]) / 2.0).astype(int)
    return tuple(slice(o, o + n) for o, n in zip(offset, reference.shape, strict=True))


def test_head_labels_are_background_outside_the_brain_and_the_brain_is_unchanged(
        with_and_without):
    heads, brains = with_and_without
    image, labels = heads["t1"]
    b_image, b_labels = brains["t1"]
    assert image.shape > b_labels.shape                       # a larger field of view
    inner = _world_index(labels, b_labels)
    np.testing.assert_array_equal(labels.data[inner], b_labels.data)   # same brain labels
    outside = np.ones(labels.shape, bool)
    outside[inner] = False
    assert not labels.data[outside].any()                     # all of the added rim: background
    # ... but the image shows tissue there: scalp and skull around the brain
    brain = labels.data > 0
    non_brain = ~brain & (image.data > 0.2 * image.data[brain].mean())
    assert non_brain.sum() > 0.2 * brain.sum()
    assert b_image.data[b_labels.data == 0].mean() < 0.5 * image.data[~brain].mean() + 1


def test_fat_is_bright_and_bone_dark_on_t1w():
    props = HEAD_TISSUE_PROPERTIES["1.5T"]
    t1 = DOMAINS["t1"]
    fat = tissue_signal(props["fat"], t1.tr_ms, t1.te_ms)
    bone = tissue_signal(props["bone"], t1.tr_ms, t1.te_ms)
    wm = t1.tissue_signals()[2]
    assert fat > wm > 10 * bone


def test_simulate_head_shells_and_determinism():
    shape = (60, 70, 60)
    idx = np.indices(shape).astype(np.float32)
    centre = (np.asarray(shape) - 1) / 2
    brain = (((idx[0] - centre[0]) / 18) ** 2 + ((idx[1] - centre[1]) / 22) ** 2
             + ((idx[2] - centre[2] + 5) / 15) ** 2) <= 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -np.asarray(shape) + 1.0
    a = simulate_head(brain, affine, np.random.default_rng(5))
    b = simulate_head(brain, affine, np.random.default_rng(5))
    c = simulate_head(brain, affine, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (len(HEAD_TISSUES),) + shape
    assert not a[:, brain].any()                              # nothing inside the brain
    assert set(np.unique(a)) <= {0.0, 1.0} and a.sum(0).max() <= 1
    for name in ("csf", "bone", "marrow", "fat", "muscle"):
        assert a[HEAD_TISSUES.index(name)].sum() > 0, name
    # order of the shells along a ray from the brain's top upwards: dura, bone, ..., then air;
    # no free fluid outside the brain mask (a dura thick enough to cover the 2 mm voxels)
    thick = simulate_head(brain, affine, np.random.default_rng(5), HeadShape(dura_mm=4.0))
    top = int(centre[2] - 5 + 15)
    ray = [int(np.argmax(thick[:, int(centre[0]), int(centre[1]), z]))
           if thick[:, int(centre[0]), int(centre[1]), z].any() else -1
           for z in range(top + 1, shape[2])]
    assert ray[0] == HEAD_TISSUES.index("dura") and ray[-1] == -1
    assert HEAD_TISSUES.index("bone") in ray and HEAD_TISSUES.index("fat") in ray
    assert HEAD_TISSUES.index("csf") not in ray
