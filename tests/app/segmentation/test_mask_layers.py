"""The run's mask layers: prepared empty before a run, filled in place by previews, the
unfilled ones removed when a run ends without masks."""

from __future__ import annotations

import numpy as np

from app.segmentation.mask_layers import MaskLayers
from uda_core.io import Volume


def _volume(shape=(6, 5, 4)) -> Volume:
    return Volume(np.random.default_rng(0).random(shape).astype(np.float32), np.eye(4))


def test_prepared_layers_are_filled_in_place_and_unfilled_ones_discarded(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = MaskLayers(viewer)
    targets = ["/data/a.nii.gz", "/data/b.nii.gz"]
    for path in targets:
        layers.show_target(path, _volume())
    layers.begin_run("sfda", targets)
    layers.prepare_run()
    names = [layer.name for layer in viewer.layers]
    assert names[2:] == ["run 1 · sfda · before a", "run 1 · sfda · mask a",
                         "run 1 · sfda · before b", "run 1 · sfda · mask b"]
    assert [viewer.layers[n].visible for n in names[2:]] == [False, True, False, False]
    assert viewer.layers.selection.active.name == "run 1 · sfda · mask a"
    assert layers.mask_data(0) is None and not viewer.layers["run 1 · sfda · mask a"].data.any()

    live = viewer.layers["run 1 · sfda · mask a"]
    inserted = []
    viewer.layers.events.inserted.connect(inserted.append)
    labels = np.ones((6, 5, 4), np.uint8)
    layers.show_mask(0, labels, before=False)
    assert inserted == [] and viewer.layers["run 1 · sfda · mask a"] is live
    assert layers.mask_data(0).all() and layers.mask_data(0, before=True) is None

    layers.discard_unfilled()   # the run ended: only the mask it made stays
    assert [layer.name for layer in viewer.layers][2:] == ["run 1 · sfda · mask a"]


def test_the_visible_image_is_the_run_target_whose_mask_is_shown(make_napari_viewer):
    """Targets finish reading in any order: the image shown first may be another subject's
    than run target 0, whose live mask is the visible one. A run shows target 0's image."""
    viewer = make_napari_viewer()
    layers = MaskLayers(viewer)
    targets = ["/data/a.nii.gz", "/data/b.nii.gz"]
    for path in reversed(targets):   # b was read first
        layers.show_target(path, _volume())
    assert viewer.layers["b"].visible and not viewer.layers["a"].visible
    layers.begin_run("sfda", targets)
    layers.prepare_run()
    assert viewer.layers["a"].visible and not viewer.layers["b"].visible
    assert viewer.layers["run 1 · sfda · mask a"].visible
