"""app._reader: every volume format uda_core reads opens in napari, in the right place."""

from __future__ import annotations

import contextlib
import gzip
import locale

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from app._reader import default_class_names, is_label_name, napari_get_reader
from app.layers import to_display, world_from_ras
from uda_core.errors import InputError

SHAPE = (6, 7, 5)  # (X, Y, Z)
SPACING = (1.5, 1.0, 2.5)  # mm


def _scan() -> np.ndarray:
    """Distinct float32 values (i, j, k) -> 100 + 35 i + 5 j + k, so voxels can be traced."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    return (100.0 + 35 * i + 5 * j + k).astype(np.float32)


def _ras_affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-4.0, 7.0, -2.5]
    return affine


def _write_nibabel(path, data, affine=None):
    affine = _ras_affine() if affine is None else affine
    image_type = nib.MGHImage if str(path).endswith(".mgz") else nib.Nifti1Image
    nib.save(image_type(data, affine), str(path))
    return path


def _write_sitk(path, data):
    """Same voxels and geometry as _write_nibabel, via ITK's LPS convention."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(SPACING)
    origin_ras = _ras_affine()[:3, 3]
    image.SetOrigin((-origin_ras[0], -origin_ras[1], origin_ras[2]))
    image.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))  # ITK axes along R, A, S
    sitk.WriteImage(image, str(path))
    return path


@contextlib.contextmanager
def _keep_locale():
    """GDCM's DICOM writer switches the process locale to "C" (ASCII): put it back."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_folder(folder, data):
    """One DICOM file per axial slice, with the geometry tags a scanner writes."""
    with _keep_locale():
        return _write_dicom_slices(folder, data)


def _write_dicom_slices(folder, data):
    folder.mkdir()
    volume = sitk.GetImageFromArray(data.transpose(2, 1, 0).astype(np.int16))
    volume.SetSpacing(SPACING)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.99"
    for k in range(volume.GetDepth()):
        slice_ = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR", "0020|000e": uid, "0020|000d": uid + ".1",
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{SPACING[1]}\\{SPACING[0]}", "0018|0050": str(SPACING[2]),
            "0020|0013": str(k + 1), "0008|0018": f"{uid}.2.{k + 1}",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)
    return folder


FILE_FORMATS = {
    "scan.nii": _write_nibabel,
    "scan.nii.gz": _write_nibabel,
    "scan.mgz": _write_nibabel,
    "scan.mha": _write_sitk,
    "scan.mhd": _write_sitk,
    "scan.nrrd": _write_sitk,
    "scan.nhdr": _write_sitk,
}


@pytest.mark.parametrize("file_name", sorted(FILE_FORMATS))
def test_each_format_becomes_an_image_layer_in_place(tmp_path, file_name):
    path = FILE_FORMATS[file_name](tmp_path / file_name, _scan())
    reader = napari_get_reader(str(path))
    assert callable(reader)
    [(data, kwargs, layer_type)] = reader(str(path))
    assert layer_type == "image" and kwargs["name"] == "scan"
    assert kwargs["metadata"]["source"] == str(path)
    expected_view, expected_affine = to_display(_scan(), _ras_affine())
    np.testing.assert_allclose(data, expected_view)
    np.testing.assert_allclose(kwargs["affine"], expected_affine, atol=1e-5)


def test_dicom_folder(tmp_path):
    data = _scan()
    encoding = locale.getpreferredencoding(False)
    folder = _write_dicom_folder(tmp_path / "series", data)
    assert locale.getpreferredencoding(False) == encoding
    reader = napari_get_reader(str(folder))
    assert callable(reader)
    [(view, kwargs, layer_type)] = reader(str(folder))
    assert layer_type == "image" and kwargs["name"] == "series"
    assert kwargs["metadata"]["source"] == str(folder)
    # DICOM (LPS) origin 0 with identity directions: voxel (i, j, k) lies at
    # RAS (-1.5 i, -1.0 j, 2.5 k); check two opposite corners by their values.
    affine = kwargs["affine"]
    for ijk in [(0, 0, 0), (5, 6, 4)]:
        position = np.argwhere(view == data[ijk])
        assert len(position) == 1
        world = affine[:3, :3] @ position[0] + affine[:3, 3]
        ras = np.array(ijk) * [-1.5, -1.0, 2.5]
        np.testing.assert_allclose(world, world_from_ras(ras[None])[0], atol=1e-4)


def test_what_it_cannot_read_is_left_to_other_readers(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert napari_get_reader(str(notes)) is None
    assert napari_get_reader(str(folder)) is None
    assert napari_get_reader(str(tmp_path / "empty_dir_that_is_missing")) is None
    assert napari_get_reader([]) is None


def test_a_list_of_files_gives_one_layer_each(tmp_path):
    paths = [str(_write_nibabel(tmp_path / f"s{n}.nii.gz", _scan())) for n in range(2)]
    reader = napari_get_reader(paths)
    assert [kwargs["name"] for _, kwargs, _ in reader(paths)] == ["s0", "s1"]
    assert napari_get_reader([*paths, str(tmp_path / "notes.txt")]) is None


def test_corrupt_file_raises_one_clear_error(tmp_path):
    path = _write_nibabel(tmp_path / "broken.nii.gz", _scan())
    compressed = path.read_bytes()
    path.write_bytes(compressed[: len(compressed) // 2])  # truncated download
    reader = napari_get_reader(str(path))
    assert callable(reader)  # the name is fine; the problem shows when reading
    with pytest.raises(InputError) as excinfo:
        reader(str(path))
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "corrupt" in message or "truncated" in message


@pytest.mark.parametrize("name", ["sub-1_seg.nii.gz", "sub-1_labels.nii.gz", "aseg.mgz",
                                  "case_dseg.nrrd"])
def test_label_names(name):
    assert is_label_name(name)


@pytest.mark.parametrize("name", ["sub-1_t1.nii.gz", "segment.nii", "labelsfoo.mha"])
def test_image_names(name):
    assert not is_label_name(name)


def test_labels_file_becomes_a_labels_layer(tmp_path):
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:5, 2:6, 1:4] = 3
    labels[2:4, 3:5, 2] = 2
    path = _write_nibabel(tmp_path / "sub-1_seg.nii.gz", labels)
    [(data, kwargs, layer_type)] = napari_get_reader(str(path))(str(path))
    assert layer_type == "labels" and kwargs["name"] == "sub-1_seg"
    assert np.issubdtype(data.dtype, np.integer)
    np.testing.assert_array_equal(data, to_display(labels, _ras_affine())[0])
    assert list(kwargs["features"]["class"]) == ["background", "CSF", "GM", "WM"]
    assert kwargs["colormap"][0][3] == 0.0  # background transparent


def test_class_names_for_other_label_counts():
    assert default_class_names(0) == ["background", "CSF", "GM", "WM"]
    assert default_class_names(5) == ["background", "class 1", "class 2", "class 3",
                                      "class 4", "class 5"]


def test_labels_file_with_fractions_is_refused(tmp_path):
    path = _write_nibabel(tmp_path / "probs_seg.nii.gz", _scan() / 7.0)
    with pytest.raises(InputError, match="not a label map"):
        napari_get_reader(str(path))(str(path))


def test_viewer_open_places_the_volume_in_mm(tmp_path, make_napari_viewer):
    path = _write_nibabel(tmp_path / "scan.nii.gz", _scan())
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="uda-studio")
    assert layer.name == "scan"
    extent = np.asarray(layer.extent.world)  # corner voxel centres, (S, P, L) mm
    physical_size = extent[1] - extent[0] + np.array(SPACING)[[2, 1, 0]]  # + one voxel
    np.testing.assert_allclose(physical_size, np.multiply(SHAPE, SPACING)[[2, 1, 0]])
    # the first voxel sits where its RAS position says
    np.testing.assert_allclose(layer.data_to_world(np.argwhere(layer.data == 100.0)[0]),
                               world_from_ras(_ras_affine()[None, :3, 3])[0])


def test_viewer_open_reports_the_bad_file(tmp_path, make_napari_viewer):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as excinfo:
        viewer.open(str(path), plugin="uda-studio")
    # napari passes the reader's error on (as is, or as the cause of a ReaderPluginError)
    error = excinfo.value
    while error is not None and not isinstance(error, InputError):
        error = error.__cause__
    assert error is not None, repr(excinfo.value)
    assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    assert len(viewer.layers) == 0
