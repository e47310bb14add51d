"""app.layers: volumes reach napari's (S, P, L) mm world without any voxel moving."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from app.layers import (
    CAMERA_ORIENTATION,
    WORLD_FROM_RAS,
    class_colours,
    from_display,
    image_layer,
    keep_head_up,
    labels_layer,
    orientation_2d,
    ras_from_world,
    to_display,
    world_from_ras,
)
from uda_core.io.volume import Volume


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(linear, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


AFFINES = {
    "RAS": _affine(np.diag([1.5, 2.0, 3.0]), [-10.0, -12.0, -8.0]),
    "LPS": _affine(np.diag([-1.0, -1.0, 2.5]), [10.0, 12.0, -8.0]),
    "PIL": _affine(np.array([[0, 0, -1.0], [-3.5, 0, 0], [0, -1.0, 0]]), [40.0, 50.0, 60.0]),
    "oblique": _affine(_rotation(0.3, -0.2, 0.5) * [0.9, 1.1, 1.3], [5.5, -20.25, 31.0]),
}
SHAPE = (5, 6, 7)


def _indices(shape) -> np.ndarray:
    """All voxel indices of `shape` as an (N, 3) array, C order."""
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_no_voxel_moves(name):
    affine = AFFINES[name]
    data = np.arange(np.prod(SHAPE)).reshape(SHAPE)  # every voxel value is its own id
    view, napari_affine = to_display(data, affine)
    assert sorted(view.shape) == sorted(SHAPE)
    display_idx = _indices(view.shape)
    original_idx = _indices(SHAPE)[view.reshape(-1)]  # where each displayed voxel came from
    world_napari = _apply(napari_affine, display_idx)
    world_expected = world_from_ras(_apply(affine, original_idx))
    np.testing.assert_allclose(world_napari, world_expected, atol=1e-9)


@pytest.mark.parametrize("name", ["RAS", "LPS", "PIL"])
def test_axis_aligned_scans_get_a_diagonal_affine(name):
    view, napari_affine = to_display(np.zeros(SHAPE), AFFINES[name])
    linear = napari_affine[:3, :3]
    np.testing.assert_allclose(linear, np.diag(np.diag(linear)))
    spacing = np.linalg.norm(AFFINES[name][:3, :3], axis=0)
    # the display axes carry the voxel sizes of the array axes they came from, all positive
    assert sorted(np.diag(linear)) == pytest.approx(sorted(spacing))
    assert np.all(np.diag(linear) > 0)


def test_oblique_scan_keeps_its_rotation_close_to_the_display_axes():
    _, napari_affine = to_display(np.zeros(SHAPE), AFFINES["oblique"])
    linear = napari_affine[:3, :3]
    assert not np.allclose(linear, np.diag(np.diag(linear)))  # the rotation is kept
    columns = np.abs(linear) / np.linalg.norm(linear, axis=0)
    assert np.all(np.argmax(columns, axis=0) == [0, 1, 2])  # each axis closest to its own
    assert np.all(np.diag(linear) > 0)


def test_ras_volume_is_shown_radiologically():
    """Axial slice: anterior at the top row, the patient's right in the left column."""
    data = np.zeros((8, 9, 4), dtype=np.float32)  # RAS: x to the right, y anterior, z up
    data[-1, -1, 2] = 1.0  # the most right, most anterior voxel of axial slice z = 2
    view, napari_affine = to_display(data, AFFINES["RAS"])
    assert view.shape == (4, 9, 8)  # (S, P, L)
    rows, cols = np.nonzero(view[2])
    assert (rows.tolist(), cols.tolist()) == ([0], [0])
    assert napari_affine[0, 3] == pytest.approx(-8.0 + 2 * 0)  # slice 0 is the lowest one


def test_world_and_ras_points():
    ras = np.array([[1.0, 2.0, 3.0], [-4.0, 5.5, -6.0]])
    np.testing.assert_allclose(world_from_ras(ras), [[3.0, -2.0, -1.0], [-6.0, -5.5, 4.0]])
    np.testing.assert_allclose(ras_from_world(world_from_ras(ras)), ras)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_from_display_restores_the_original_array(name):
    data = np.random.default_rng(0).integers(0, 4, SHAPE)
    view, _ = to_display(data, AFFINES[name])
    np.testing.assert_array_equal(from_display(view, AFFINES[name]), data)


def test_to_display_refuses_non_3d_data():
    with pytest.raises(ValueError, match="3D"):
        to_display(np.zeros((4, 4)), np.eye(4))


def test_tissue_colours_background_transparent_and_distinct():
    colours = class_colours(["background", "CSF", "GM", "WM"])
    assert colours[0][3] == 0.0
    assert all(colours[k][3] == 1.0 for k in (1, 2, 3))
    assert len({colours[k] for k in (1, 2, 3)}) == 3
    # the same tissue keeps its colour whatever the class order
    reordered = class_colours(["background", "wm", "csf", "gm"])
    assert (reordered[1], reordered[2], reordered[3]) == (colours[3], colours[1], colours[2])


def test_generic_palette_for_many_classes():
    names = ["background"] + [f"class {k}" for k in range(1, 12)]
    colours = class_colours(names)
    assert sorted(colours) == list(range(12))
    assert colours[0][3] == 0.0
    assert len({colours[k] for k in range(1, 12)}) == 11
    assert all(colours[k][3] == 1.0 for k in range(1, 12))


def test_image_layer_tuple():
    rng = np.random.default_rng(1)
    data = rng.normal(10.0, 1.0, (10, 12, 8)).astype(np.float32)
    data[2:8, 3:9, 2:6] = rng.normal(500.0, 20.0, (6, 6, 4))
    volume = Volume(data=data, affine=AFFINES["LPS"], source="/data/scan.nii.gz")
    view, kwargs, layer_type = image_layer(volume, "scan", opacity=0.7, metadata={"tag": 1})
    assert layer_type == "image" and kwargs["name"] == "scan" and kwargs["colormap"] == "gray"
    low, high = kwargs["contrast_limits"]
    assert 300.0 < low < 500.0 < high < 700.0  # the foreground, not the background noise
    assert kwargs["opacity"] == 0.7
    assert kwargs["metadata"]["source"] == "/data/scan.nii.gz" and kwargs["metadata"]["tag"] == 1
    np.testing.assert_allclose(kwargs["metadata"]["ras_affine"], AFFINES["LPS"])
    assert view.shape == (8, 12, 10)


def test_labels_layer_in_napari_names_the_class_under_the_cursor():
    from napari.layers import Labels

    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 2
    data, kwargs, layer_type = labels_layer(labels, AFFINES["RAS"], ["background", "CSF", "GM",
                                                                     "WM"], "seg")
    assert layer_type == "labels"
    layer = Labels(data, **kwargs)
    assert layer.colormap.map(0)[3] == 0.0  # background transparent
    np.testing.assert_allclose(layer.colormap.map(2), class_colours(["bg", "CSF", "GM"])[2])
    inside = world_from_ras(_apply(AFFINES["RAS"], np.array([[2.0, 2.0, 2.0]])))[0]
    assert "class: GM" in layer.get_status(inside, world=True)["coordinates"]


def test_layers_module_needs_no_qt():
    code = ("import sys, app.layers, app._reader, app._sample_data; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('PySide6', 'PyQt5', 'PyQt6', 'qtpy', 'napari', 'vispy')]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8",
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_axial_slice_on_screen_anterior_top_right_on_left(make_napari_viewer):
    """What napari draws: a marker in the anterior-right corner shows top-left."""
    data = np.zeros((20, 20, 5), dtype=np.float32)  # RAS
    data[14:, 14:, 2] = 1.0  # right (high x) and anterior (high y)
    view, kwargs, _ = image_layer(Volume(data=data, affine=np.diag([2.0, 2.0, 2.0, 1.0])), "m")
    assert kwargs["contrast_limits"] == (0.0, 1.0)  # a flat foreground: full range
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black
    viewer.add_image(view, **kwargs)
    viewer.dims.set_point(0, 4.0)  # S = 4 mm is axial slice z = 2
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    bright = shot[..., :3].mean(axis=-1) > 128
    rows, cols = np.nonzero(bright)
    assert rows.size > 0
    assert rows.mean() < shot.shape[0] / 2  # anterior at the top
    assert cols.mean() < shot.shape[1] / 2  # patient's right on the screen's left


def test_camera_orientation_matches_the_world_handedness(make_napari_viewer):
    """(S, P, L) is left-handed; the suggested 3D camera must be too, or 3D is mirrored."""
    assert np.linalg.det(WORLD_FROM_RAS[:3, :3]) < 0
    viewer = make_napari_viewer()
    camera = viewer.scene.camera  # napari >= 0.9 (viewer.camera before)
    camera.orientation = CAMERA_ORIENTATION
    assert str(camera.handedness.value).lower() == "left"


@pytest.mark.parametrize("order, along", [((1, 0, 2), "coronal"), ((2, 0, 1), "sagittal")])
def test_coronal_and_sagittal_views_show_the_head_up(make_napari_viewer, order, along):
    """A volume whose top (high z, superior) is marked: in the coronal and sagittal views the
    mark is drawn in the upper half of the canvas; back in the axial view, anterior is up."""
    data = np.zeros((20, 24, 30), dtype=np.float32)  # RAS
    data[4:16, 4:20, 4:26] = 0.3                      # the head
    data[4:16, 4:20, 23:26] = 1.0                     # its top (superior) marked
    view, kwargs, _ = image_layer(Volume(data=data, affine=np.diag([2.0, 2.0, 2.0, 1.0])), "m")
    viewer = make_napari_viewer(show=True)
    viewer.add_image(view, **{**kwargs, "contrast_limits": (0.0, 1.0)})  # head grey, top white
    keep_head_up(viewer)
    viewer.dims.order = order
    viewer.dims.set_point(order[0], -20.0 if along == "sagittal" else -24.0)  # mid-head
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].mean(axis=-1)
    top_rows = np.nonzero(shot > 200)[0]
    head_rows = np.nonzero(shot > 40)[0]
    assert top_rows.size and head_rows.size
    assert top_rows.mean() < head_rows.mean()           # the marked top is above the rest
    assert orientation_2d(tuple(viewer.dims.displayed)) == ("up", "right")
    viewer.dims.order = (0, 1, 2)
    assert tuple(str(v.value) for v in viewer.scene.camera.orientation2d) == ("down", "right")

