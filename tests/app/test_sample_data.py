"""app._sample_data: the demo subject in four domains, image and labels overlaid."""

from __future__ import annotations

import numpy as np
import pytest

from app import _sample_data
from uda_core.errors import InputError

SAMPLES = {
    "demo-t1": _sample_data.demo_t1,
    "demo-t2": _sample_data.demo_t2,
    "demo-flair": _sample_data.demo_flair,
    "demo-protocol": _sample_data.demo_protocol,
}


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_sample_is_an_image_with_matching_labels(key):
    (image, image_kwargs, image_type), (labels, labels_kwargs, labels_type) = SAMPLES[key]()
    assert (image_type, labels_type) == ("image", "labels")
    assert image.shape == labels.shape and image.ndim == 3
    np.testing.assert_allclose(image_kwargs["affine"], labels_kwargs["affine"])
    # every demo volume is axis-aligned: reoriented to (S, P, L), positive voxel sizes in mm
    linear = image_kwargs["affine"][:3, :3]
    np.testing.assert_allclose(linear, np.diag(np.diag(linear)))
    assert np.all(np.diag(linear) > 0)
    assert np.issubdtype(labels.dtype, np.integer)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert list(labels_kwargs["features"]["class"]) == ["background", "CSF", "GM", "WM"]
    low, high = image_kwargs["contrast_limits"]
    assert image.min() <= low < high <= image.max()
    assert labels_kwargs["name"] == image_kwargs["name"] + " reference labels"


def test_protocol_scan_stored_pil_is_shown_like_the_t1():
    """Different storage orders, same display axes: the brains overlap in world space."""
    (t1, t1_kwargs, _), _ = _sample_data.demo_t1()
    (protocol, protocol_kwargs, _), _ = _sample_data.demo_protocol()

    def world_centre(image, kwargs):
        indices = np.argwhere(image > kwargs["contrast_limits"][0])
        affine = kwargs["affine"]
        return affine[:3, :3] @ indices.mean(axis=0) + affine[:3, 3]

    assert np.linalg.norm(world_centre(t1, t1_kwargs)
                          - world_centre(protocol, protocol_kwargs)) < 10.0  # mm


def test_missing_demo_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("UDA_RESOURCES", str(tmp_path))
    with pytest.raises(InputError, match="manifest.json: cannot be read"):
        _sample_data.demo_t1()


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_open_sample_in_viewer(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample("uda-studio", key)
    assert [layer._type_string for layer in viewer.layers] == ["image", "labels"]
    image, labels = viewer.layers
    assert image.data.shape == labels.data.shape
    np.testing.assert_allclose(np.asarray(image.extent.world), np.asarray(labels.extent.world))
    assert labels.colormap.map(0)[3] == 0.0
