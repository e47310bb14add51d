"""uda_core.io: readers, writers, geometry and intensity normalisation (tiny arrays, fast)."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from uda_core.errors import InputError, OutputError
from uda_core.io import geometry, readers, writers
from uda_core.io.geometry import foreground_center, model_grid, resample
from uda_core.io.intensity import DEFAULT_NORMALISATION, foreground_mask, normalise
from uda_core.io.readers import available_memory_bytes, read_labels, read_volume
from uda_core.io.volume import Volume
from uda_core.io.writers import output_stem, write_volume

# --- helpers -----------------------------------------------------------------------------


def _rotation(angles) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, y then z."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(linear, origin) -> np.ndarray:
    """A 4x4 affine whose entries float32 can hold exactly (as NIfTI stores them)."""
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine.astype(np.float32).astype(np.float64)


AFFINES = {
    "RAS": _affine(np.eye(3), [-10.0, -12.0, -8.0]),
    "LPS": _affine(np.diag([-1.0, -1.0, 1.0]), [10.0, 12.0, -8.0]),
    "oblique": _affine(_rotation([0.3, -0.2, 0.5]) * [0.9, 1.1, 1.3], [5.5, -20.25, 31.0]),
    "anisotropic": _affine(np.diag([1.2, 1.2, 3.0]), [-3.6, -4.8, -9.0]),
}


def _random(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)


def _save_nifti(path, data, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return Path(path)


def _sitk_image(array_kji: np.ndarray, spacing, origin, direction) -> sitk.Image:
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(np.asarray(direction, dtype=np.float64).ravel().tolist())
    return image


def _expected_ras(image: sitk.Image) -> np.ndarray:
    """RAS affine from ITK geometry, computed independently of the reader."""
    lps = np.eye(4)
    for index in range(3):
        column = [0, 0, 0]
        column[index] = 1
        p0 = np.array(image.TransformContinuousIndexToPhysicalPoint([0.0, 0.0, 0.0]))
        p1 = np.array(image.TransformContinuousIndexToPhysicalPoint([float(c) for c in column]))
        lps[:3, index] = p1 - p0
        lps[:3, 3] = p0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _write_dicom_series(folder: Path, image: sitk.Image, series_uid: str,
                        study_uid: str = "1.2.826.0.1.3680043.2.1125.7", skip=(),
                        copy: int = 1) -> Path:
    """One file per slice, with the geometry tags a scanner would write.

    Files are named in reverse slice order, so the reader must sort by position; `copy`
    numbers a further set of the same slices (new file names and instance UIDs).
    """
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    sx, sy, sz = image.GetSpacing()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        if k in skip:
            continue
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR",
            "0020|000e": series_uid,
            "0020|000d": study_uid,
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])),
            "0028|0030": f"{sy:.6f}\\{sx:.6f}",
            "0018|0050": f"{sz:.6f}",
            "0020|0013": str(k + 1),
            "0008|0018": f"{series_uid}.{copy}.{k + 1}",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"copy{copy}_{image.GetDepth() - k:03d}.dcm"))
        writer.Execute(slice_)
    return folder


def _dicom_image() -> tuple[sitk.Image, np.ndarray]:
    array_kji = (np.arange(5 * 6 * 7).reshape(5, 6, 7) * 3 - 200).astype(np.int16)
    image = _sitk_image(array_kji, (0.8, 0.9, 2.5), (10.0, -20.0, 30.0),
                        _rotation([0.0, 0.0, 0.3]))
    return image, array_kji


def _one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, InputError)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


# --- readers: good inputs ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_write_read_round_trip_keeps_grid(tmp_path, name, suffix):
    data = _random((5, 6, 7))
    volume = Volume(data, AFFINES[name])
    path = write_volume(volume, tmp_path / f"scan{suffix}")
    back = read_volume(path)
    assert back.shape == (5, 6, 7)
    assert np.array_equal(back.affine, volume.affine)
    assert np.array_equal(back.data, data) and back.data.dtype == np.float32
    assert back.source == str(path)
    # Second generation: written with the first one's header mirrored, grid unchanged.
    again = read_volume(write_volume(back, tmp_path / f"again{suffix}"))
    assert np.array_equal(again.affine, volume.affine)
    assert again.orientation == volume.orientation
    assert np.allclose(again.spacing, volume.spacing)


def test_nifti_scaling_and_trailing_unit_axes(tmp_path):
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6, 1, 1)
    image = nib.Nifti1Image(raw, AFFINES["LPS"])
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, str(tmp_path / "scaled.nii.gz"))
    volume = read_volume(tmp_path / "scaled.nii.gz")
    assert volume.shape == (4, 5, 6)
    assert np.allclose(volume.data, raw[..., 0, 0] * 0.5 + 10.0)
    assert volume.orientation == "LPS"
    assert volume.meta["format"] == "NIfTI"


def test_mgz_is_read(tmp_path):
    data = _random((4, 5, 6))
    nib.save(nib.MGHImage(data, AFFINES["RAS"]), str(tmp_path / "brain.mgz"))
    volume = read_volume(tmp_path / "brain.mgz")
    assert np.allclose(volume.affine, AFFINES["RAS"], atol=1e-5)
    assert np.array_equal(volume.data, data)


@pytest.mark.parametrize("suffix", [".mha", ".mhd", ".nrrd", ".nhdr"])
def test_simpleitk_formats_match_nibabel(tmp_path, suffix):
    array_kji = _random((4, 5, 6))  # SimpleITK order (k, j, i): size (6, 5, 4)
    direction = _rotation([0.2, 0.1, -0.4]) @ np.diag([1.0, -1.0, 1.0])
    image = _sitk_image(array_kji, (0.7, 1.1, 2.5), (12.5, -3.25, 40.0), direction)
    sitk.WriteImage(image, str(tmp_path / f"scan{suffix}"))
    sitk.WriteImage(image, str(tmp_path / "scan_ref.nii.gz"))
    volume = read_volume(tmp_path / f"scan{suffix}")
    reference = read_volume(tmp_path / "scan_ref.nii.gz")  # nibabel reads ITK's NIfTI
    assert volume.shape == (6, 5, 4) == reference.shape
    assert np.array_equal(volume.data, array_kji.transpose(2, 1, 0))
    assert np.array_equal(volume.data, reference.data)
    assert np.allclose(volume.affine, _expected_ras(image), atol=1e-9)
    assert np.allclose(volume.affine, reference.affine, atol=1e-4)
    assert np.allclose(volume.spacing, (0.7, 1.1, 2.5))
    # A voxel maps to the same world point as in ITK (LPS -> RAS: x and y negated).
    lps = image.TransformIndexToPhysicalPoint((3, 1, 2))
    ras = volume.affine @ [3, 1, 2, 1]
    assert np.allclose(ras[:3], [-lps[0], -lps[1], lps[2]])


def test_dicom_series_geometry(tmp_path):
    image, array_kji = _dicom_image()
    folder = _write_dicom_series(tmp_path / "series", image, "1.2.826.0.1.3680043.2.1125.1")
    volume = read_volume(folder)
    assert volume.shape == (7, 6, 5)
    assert np.allclose(volume.spacing, (0.8, 0.9, 2.5), atol=1e-5)
    assert np.allclose(volume.affine, _expected_ras(image), atol=1e-4)
    assert np.array_equal(volume.data, array_kji.transpose(2, 1, 0).astype(np.float32))
    assert volume.meta["format"] == "DICOM" and volume.meta["modality"] == "MR"
    labels = read_labels(folder)
    assert labels.data.dtype == np.int16
    assert output_stem(folder) == "series"


def test_memory_check_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemFree:  100 kB\nMemAvailable:  512 kB\n")
    assert available_memory_bytes(meminfo) == 512 * 1024
    meminfo.write_text("MemTotal:  1000 kB\nMemFree:  100 kB\nBuffers:  20 kB\nCached:  30 kB\n")
    assert available_memory_bytes(meminfo) == 150 * 1024
    fallback = available_memory_bytes(tmp_path / "missing")
    assert fallback is None or fallback > 0
    if Path("/proc/meminfo").exists():
        assert available_memory_bytes() > 0


# --- readers: every bad input is one InputError line naming the file -----------------------


def _gzip_nifti(tmp_path, name="scan.nii.gz") -> Path:
    return _save_nifti(tmp_path / name, _random((16, 16, 16)))


def _make_truncated_gzip(tmp_path):
    blob = _gzip_nifti(tmp_path, "full.nii.gz").read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(blob[: len(blob) // 2])
    return path


def _make_truncated_gzip_header(tmp_path):
    blob = _gzip_nifti(tmp_path, "full.nii.gz").read_bytes()
    path = tmp_path / "truncated_header.nii.gz"
    path.write_bytes(blob[:60])
    return path


def _make_corrupt_gzip(tmp_path):
    blob = bytearray(_gzip_nifti(tmp_path, "full.nii.gz").read_bytes())
    blob[len(blob) // 2: len(blob) // 2 + 64] = bytes(64)
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(blob))
    return path


def _make_not_gzip(tmp_path):
    path = tmp_path / "plain_text.nii.gz"
    path.write_text("this is not gzip\n" * 40)
    return path


def _make_text_nii(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("subject 1, T1w, 3 T\n" * 40)
    return path


def _make_tiny_nii(tmp_path):
    path = tmp_path / "tiny.nii"
    path.write_bytes(b"\x00" * 20)
    return path


def _make_truncated_nii(tmp_path):
    blob = _save_nifti(tmp_path / "full.nii", _random((16, 16, 16))).read_bytes()
    path = tmp_path / "truncated.nii"
    path.write_bytes(blob[:1000])
    return path


def _make_4d(tmp_path):
    return _save_nifti(tmp_path / "bold.nii.gz", _random((4, 5, 6, 12)))


def _make_5d(tmp_path):
    return _save_nifti(tmp_path / "field.nii.gz", _random((4, 5, 6, 1, 3)))


def _make_empty_axis(tmp_path):
    return _save_nifti(tmp_path / "empty.nii", np.zeros((4, 0, 6), np.float32))


def _make_single_slice(tmp_path):
    return _save_nifti(tmp_path / "slice.nii.gz", _random((4, 5, 1)))


def _make_2d(tmp_path):
    return _save_nifti(tmp_path / "flat.nii.gz", _random((4, 5)))


def _make_nan(tmp_path):
    data = _random((4, 5, 6))
    data[0, 0, 0] = data[1, 2, 3] = np.nan
    data[3, 4, 5] = np.inf
    return _save_nifti(tmp_path / "nan.nii.gz", data)


def _make_huge_header(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + bytes(4) + bytes(16))  # header, extension flag, bytes
    return path


def _make_unknown_extension(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    return path


def _make_text_mha(tmp_path):
    path = tmp_path / "notes.mha"
    path.write_text("hello\n")
    return path


def _make_mhd_without_raw(tmp_path):
    sitk.WriteImage(_sitk_image(_random((4, 5, 6)), (1, 1, 1), (0, 0, 0), np.eye(3)),
                    str(tmp_path / "scan.mhd"))
    for raw in tmp_path.glob("scan.*raw*"):
        raw.unlink()
    return tmp_path / "scan.mhd"


def _make_nhdr_without_raw(tmp_path):
    sitk.WriteImage(_sitk_image(_random((4, 5, 6)), (1, 1, 1), (0, 0, 0), np.eye(3)),
                    str(tmp_path / "scan.nhdr"))
    (tmp_path / "scan.raw").unlink()
    return tmp_path / "scan.nhdr"


def _make_truncated_mha(tmp_path):
    path = tmp_path / "scan.mha"
    sitk.WriteImage(_sitk_image(_random((8, 8, 8)), (1, 1, 1), (0, 0, 0), np.eye(3)), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _make_truncated_nrrd(tmp_path):
    path = tmp_path / "scan.nrrd"
    sitk.WriteImage(_sitk_image(_random((8, 8, 8)), (1, 1, 1), (0, 0, 0), np.eye(3)), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    return path


def _make_vector_mha(tmp_path):
    image = sitk.GetImageFromArray(_random((4, 5, 6, 3)), isVector=True)
    sitk.WriteImage(image, str(tmp_path / "rgb.mha"))
    return tmp_path / "rgb.mha"


def _make_empty_folder(tmp_path):
    folder = tmp_path / "empty_dicom"
    folder.mkdir()
    return folder


def _make_mixed_series(tmp_path):
    image, _ = _dicom_image()
    folder = tmp_path / "mixed"
    _write_dicom_series(folder / "a", image, "1.2.826.0.1.3680043.2.1125.11")
    _write_dicom_series(folder / "b", image, "1.2.826.0.1.3680043.2.1125.12")
    for sub in ("a", "b"):
        for file in (folder / sub).iterdir():
            file.rename(folder / f"{sub}_{file.name}")
        (folder / sub).rmdir()
    return folder


def _make_doubled_series(tmp_path):
    image, _ = _dicom_image()
    folder = tmp_path / "two_echoes"
    _write_dicom_series(folder, image, "1.2.826.0.1.3680043.2.1125.14")
    _write_dicom_series(folder, image, "1.2.826.0.1.3680043.2.1125.14", copy=2)
    return folder


def _make_gappy_series(tmp_path):
    image, _ = _dicom_image()
    return _write_dicom_series(tmp_path / "gappy", image, "1.2.826.0.1.3680043.2.1125.13",
                               skip=(2,))


BAD_INPUTS = {
    "missing": (lambda tmp: tmp / "nowhere.nii.gz", "does not exist"),
    "unknown extension": (_make_unknown_extension, "unknown file type '.png'"),
    "truncated gzip": (_make_truncated_gzip, "truncated or corrupt gzip"),
    "truncated gzip header": (_make_truncated_gzip_header, "truncated or corrupt gzip"),
    "corrupt gzip": (_make_corrupt_gzip, "truncated or corrupt gzip"),
    "not gzip": (_make_not_gzip, "is not gzip-compressed"),
    "text named .nii": (_make_text_nii, "is not a NIfTI image"),
    "tiny .nii": (_make_tiny_nii, "is not a NIfTI image"),
    "truncated .nii": (_make_truncated_nii, "truncated: the header declares 16384 bytes"),
    "4D": (_make_4d, "is a 4D image with 12 volumes; UDA Studio needs one 3D volume"),
    "5D": (_make_5d, "is a 5D image"),
    "empty axis": (_make_empty_axis, "empty axis"),
    "single slice": (_make_single_slice, "single slice (shape 4x5x1): needs a 3D volume"),
    "2D": (_make_2d, "single slice"),
    "NaN/Inf": (_make_nan, "contains 3 non-finite voxels (2 NaN, 1 Inf)"),
    "huge header": (_make_huge_header, "too large for memory"),
    "text named .mha": (_make_text_mha, "is not a readable MetaImage image"),
    "mhd without data": (_make_mhd_without_raw, "its voxel data file scan.raw is missing"),
    "nhdr without data": (_make_nhdr_without_raw, "voxel data file scan.raw is missing"),
    "truncated .mha": (_make_truncated_mha, "truncated: the header declares 2048 bytes"),
    "truncated .nrrd": (_make_truncated_nrrd, "truncated: the header declares 2048 bytes"),
    "vector image": (_make_vector_mha, "has 3 values per voxel"),
    "empty DICOM folder": (_make_empty_folder, "no DICOM series"),
    "two DICOM series": (_make_mixed_series, "holds 2 DICOM series; pass the folder of one"),
    "DICOM slice missing": (_make_gappy_series, "unevenly spaced slices"),
    "DICOM slices doubled": (_make_doubled_series, "several share one position"),
}


@pytest.mark.parametrize("reader", [read_volume, read_labels], ids=["volume", "labels"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_input_error_line(tmp_path, case, reader):
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(InputError) as excinfo:
        reader(path)
    message = _one_line_error(excinfo, path)
    assert expected in message


def test_huge_header_is_refused_before_reading(tmp_path, monkeypatch):
    path = _make_huge_header(tmp_path)

    def no_loading(*args, **kwargs):
        raise AssertionError("voxels must not be read")

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_loading)
    with pytest.raises(InputError, match="too large for memory"):
        read_volume(path)


def test_memory_check_uses_available_memory(tmp_path, monkeypatch):
    path = _save_nifti(tmp_path / "scan.nii.gz", _random((10, 10, 10)))
    monkeypatch.setattr(readers, "available_memory_bytes", lambda: 7000)  # needs 8000
    with pytest.raises(InputError) as excinfo:
        read_volume(path)
    assert "declared size 10x10x10" in _one_line_error(excinfo, path)
    monkeypatch.setattr(readers, "available_memory_bytes", lambda: 9000)
    assert read_volume(path).shape == (10, 10, 10)
    monkeypatch.setattr(readers, "available_memory_bytes", lambda: None)  # unknown: no check
    assert read_volume(path).shape == (10, 10, 10)


def test_read_labels_types_and_refusals(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, (4, 5, 6))
    as_float = _save_nifti(tmp_path / "float_labels.nii.gz", labels.astype(np.float32))
    volume = read_labels(as_float)
    assert volume.data.dtype == np.int16 and np.array_equal(volume.data, labels)

    fractional = labels.astype(np.float32)
    fractional[1, 1, 1] = 2.5
    path = _save_nifti(tmp_path / "probabilities.nii.gz", fractional)
    with pytest.raises(InputError) as excinfo:
        read_labels(path)
    assert "non-integer values (e.g. 2.5)" in _one_line_error(excinfo, path)
    assert read_volume(path).data[1, 1, 1] == 2.5

    big = labels.astype(np.int32)
    big[0, 0, 0] = 40000
    path = _save_nifti(tmp_path / "big.nii.gz", big)
    with pytest.raises(InputError) as excinfo:
        read_labels(path)
    assert "do not fit 16-bit labels" in _one_line_error(excinfo, path)


def test_gzip_bytes_are_really_truncated(tmp_path):
    """Sanity check of the fixture used above: the truncated file does not decompress."""
    with pytest.raises((EOFError, OSError)), gzip.open(_make_truncated_gzip(tmp_path)) as f:
        f.read()


# --- writers -------------------------------------------------------------------------------


def test_atomic_write_leaves_no_temporary_and_never_overwrites(tmp_path):
    volume = Volume(_random((4, 5, 6)), AFFINES["RAS"])
    target = write_volume(volume, tmp_path / "out.nii.gz")
    assert sorted(os.listdir(tmp_path)) == ["out.nii.gz"]
    before = target.read_bytes()
    with pytest.raises(InputError) as excinfo:
        write_volume(volume.with_data(volume.data + 1), target)
    assert "already exists" in _one_line_error(excinfo, target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.nii.gz"]
    write_volume(volume.with_data(volume.data + 1), target, overwrite=True)
    assert np.array_equal(read_volume(target).data, volume.data + 1)
    assert sorted(os.listdir(tmp_path)) == ["out.nii.gz"]


def test_failed_write_keeps_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    volume = Volume(_random((4, 5, 6)), AFFINES["RAS"])
    target = write_volume(volume, tmp_path / "out.nii")
    before = target.read_bytes()

    def broken_save(image, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers.nib, "save", broken_save)
    with pytest.raises(OutputError) as excinfo:   # the folder is full, not the input wrong
        write_volume(volume, target, overwrite=True)
    message = str(excinfo.value)
    assert message == f"{tmp_path}: cannot write there: no space left on the device"
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.nii"]


def test_never_writes_onto_an_input(tmp_path):
    source = _save_nifti(tmp_path / "scan.nii.gz", _random((4, 5, 6)))
    before = source.read_bytes()
    volume = read_volume(source)
    for target in (source, tmp_path / "." / "scan.nii.gz"):
        with pytest.raises(InputError) as excinfo:
            write_volume(volume, target, overwrite=True)
        assert "input" in _one_line_error(excinfo, target)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(source)
    with pytest.raises(InputError):
        write_volume(volume, link, overwrite=True)
    other = _save_nifti(tmp_path / "other.nii.gz", _random((4, 5, 6)))
    with pytest.raises(InputError):
        write_volume(volume.with_data(volume.data, source=None), other, overwrite=True,
                     inputs=[source, other])
    assert source.read_bytes() == before


def test_write_refuses_bad_targets(tmp_path):
    volume = Volume(_random((4, 5, 6)), AFFINES["RAS"])
    for target, expected in [(tmp_path / "out.mha", "can only write NIfTI"),
                             (tmp_path / "missing" / "out.nii.gz", "does not exist")]:
        with pytest.raises(InputError) as excinfo:
            write_volume(volume, target)
        assert expected in _one_line_error(excinfo, target)


def test_labels_mirror_the_input_header(tmp_path):
    image = nib.Nifti1Image(_random((4, 5, 6)), AFFINES["oblique"])
    image.header.set_qform(AFFINES["oblique"], code=1)
    image.header.set_sform(AFFINES["oblique"], code=4)
    image.header.set_xyzt_units("mm", "sec")
    image.header["cal_max"] = 500.0
    nib.save(image, str(tmp_path / "t1.nii.gz"))
    volume = read_volume(tmp_path / "t1.nii.gz")
    labels = np.random.default_rng(1).integers(0, 4, (4, 5, 6)).astype(np.int16)
    target = write_volume(volume.with_data(labels, source=None), tmp_path / "seg.nii.gz",
                          dtype="uint8")
    written = nib.load(str(target))
    with gzip.open(target) as stream:  # the header as stored (nibabel hides the scaling)
        header = nib.Nifti1Header.from_fileobj(stream)
    assert header.get_data_dtype() == np.uint8
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 4)
    assert header.get_xyzt_units() == ("mm", "sec")
    assert (float(header["scl_slope"]), float(header["scl_inter"])) == (1.0, 0.0)
    assert float(header["cal_max"]) == 0.0
    assert np.array_equal(written.affine, volume.affine)
    back = read_labels(target)
    assert np.array_equal(back.data, labels) and np.array_equal(back.affine, volume.affine)


def test_write_dtypes(tmp_path):
    data = np.linspace(-1, 1, 4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    scaled = write_volume(Volume(data, AFFINES["RAS"]), tmp_path / "scaled.nii", dtype=np.int16)
    assert nib.load(str(scaled)).get_data_dtype() == np.int16
    assert np.allclose(read_volume(scaled).data, data, atol=1e-4)
    mask = write_volume(Volume(data > 0, AFFINES["RAS"]), tmp_path / "mask.nii")
    assert nib.load(str(mask)).get_data_dtype() == np.uint8
    with pytest.raises(ValueError, match="do not fit uint8"):
        write_volume(Volume(np.full((2, 2, 2), 300), AFFINES["RAS"]), tmp_path / "x.nii",
                     dtype="uint8")


@pytest.mark.parametrize("name", list(AFFINES))
def test_written_grid_reads_the_same_in_itk(tmp_path, name):
    """qform and sform agree, so ITK (which may prefer the qform) sees the same grid."""
    target = write_volume(Volume(_random((4, 5, 6)), AFFINES[name]), tmp_path / "out.nii.gz")
    assert np.allclose(_expected_ras(sitk.ReadImage(str(target))), AFFINES[name], atol=1e-4)


def test_float64_affine_is_kept_to_float32_precision(tmp_path):
    affine = np.eye(4)
    affine[:3, :3] = _rotation([0.1, 0.2, 0.3]) * 1.1  # not representable in float32
    affine[:3, 3] = [1 / 3, -2 / 7, 5 / 11]
    target = write_volume(Volume(_random((4, 5, 6)), affine), tmp_path / "out.nii")
    assert np.allclose(read_volume(target).affine, affine, rtol=0, atol=1e-6)


def test_sheared_affine_is_kept_in_sform(tmp_path):
    affine = AFFINES["RAS"].copy()
    affine[0, 1] = 0.25  # shear: a qform cannot hold it
    target = write_volume(Volume(_random((4, 5, 6)), affine), tmp_path / "shear.nii.gz")
    header = nib.load(str(target)).header
    assert int(header["qform_code"]) == 0 and int(header["sform_code"]) > 0
    assert np.array_equal(read_volume(target).affine, affine)


@pytest.mark.parametrize("name, stem", [
    ("sub-01_T1w.nii.gz", "sub-01_T1w"), ("a.b.nii", "a.b"), ("brain.mgz", "brain"),
    ("x.mha", "x"), ("x.MHD", "x"), ("ct.nrrd", "ct"), ("ct.nhdr", "ct"),
    ("notes.txt", "notes.txt"),
])
def test_output_stem(name, stem):
    assert output_stem(Path("/data") / name) == stem


def test_output_stem_of_folder(tmp_path):
    (tmp_path / "series.nii").mkdir()
    assert output_stem(tmp_path / "series.nii") == "series.nii"
    assert output_stem(str(tmp_path / "series.nii") + os.sep) == "series.nii"


# --- resample ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("name", list(AFFINES))
def test_resample_identity_is_exact(order, name):
    data = _random((5, 6, 7))
    out = resample(data, AFFINES[name], AFFINES[name], data.shape, order=order)
    assert out.dtype == np.float32 and np.array_equal(out, data)
    channels = np.stack([data, 2 * data])
    assert np.array_equal(resample(channels, AFFINES[name], AFFINES[name], data.shape,
                                   order=order), channels)


def test_resample_whole_voxel_shift_and_flip():
    data = _random((5, 6, 7))
    src = AFFINES["anisotropic"]
    shift = np.eye(4)
    shift[:3, 3] = [2, 0, -1]  # destination voxel v sits at source voxel v + (2, 0, -1)
    out = resample(data, src, src @ shift, data.shape, fill=-5.0)
    assert np.array_equal(out[:3, :, 1:], data[2:, :, :-1])
    assert np.all(out[3:] == -5.0) and np.all(out[:, :, 0] == -5.0)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:3, 3] = [4, 5, 0]  # the same box, stored LPS
    assert np.array_equal(resample(data, src, src @ flip, data.shape), data[::-1, ::-1])
    swap = np.eye(4)[[2, 0, 1, 3]].T  # destination axes (k, i, j)
    assert np.array_equal(resample(data, src, src @ swap, (7, 5, 6)),
                          data.transpose(2, 0, 1))


def test_resample_half_voxel_shift_interpolates():
    data = _random((6, 5, 4))
    shift = np.eye(4)
    shift[0, 3] = 0.5
    out = resample(data, np.eye(4), shift, (5, 5, 4))
    assert np.allclose(out, (data[:-1] + data[1:]) / 2, atol=1e-4)
    nearest = resample(data, np.eye(4), shift, (5, 5, 4), order=0)
    assert all(np.array_equal(nearest[i], data[i]) or np.array_equal(nearest[i], data[i + 1])
               for i in range(5))


def test_resample_matches_scipy_on_an_oblique_grid():
    """The (x, y, z) -> (W, H, D) order of grid_sample: compare with map_coordinates."""
    data = _random((9, 11, 13))
    src = AFFINES["oblique"]
    dst = _affine(_rotation([0.1, 0.25, -0.2]) * [1.0, 0.8, 1.4], src[:3, 3] + [0.5, 1.0, 2.0])
    out = resample(data, src, dst, (7, 8, 6))
    index = np.indices((7, 8, 6)).reshape(3, -1)
    src_index = (np.linalg.inv(src) @ dst @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    expected = ndimage.map_coordinates(data, src_index, order=1, mode="nearest").reshape(7, 8, 6)
    inside = np.all((src_index >= 0) & (src_index <= np.array(data.shape)[:, None] - 1), axis=0)
    inside = inside.reshape(7, 8, 6)
    assert inside.sum() > 20
    assert np.allclose(out[inside], expected[inside], rtol=1e-5, atol=1e-3)
    nearest = resample(data, src, dst, (7, 8, 6), order=0)
    expected0 = ndimage.map_coordinates(data, src_index, order=0, mode="nearest").reshape(7, 8, 6)
    assert np.mean(nearest[inside] == expected0[inside]) > 0.98  # ties may round either way


def test_resample_linear_field_and_round_trip():
    i, j, k = np.indices((12, 14, 10), dtype=np.float32)
    linear = 3 * i - 2 * j + 0.5 * k
    src = AFFINES["LPS"]
    # A finer (0.5 voxel) rotated grid around the source's centre.
    to_src = np.eye(4)
    to_src[:3, :3] = _rotation([0.1, -0.2, 0.35]) * 0.5
    to_src[:3, 3] = np.array([5.5, 6.5, 4.5]) - to_src[:3, :3] @ [14.5, 16.5, 11.5]
    dst, dst_shape = src @ to_src, (30, 34, 24)
    fine = resample(linear, src, dst, dst_shape, fill=np.nan)
    index = np.indices(dst_shape).reshape(3, -1)
    src_index = (to_src @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    expected = (3 * src_index[0] - 2 * src_index[1] + 0.5 * src_index[2]).reshape(dst_shape)
    inside = np.all((src_index >= 0) & (src_index <= np.array([11, 13, 9])[:, None]), axis=0)
    inside = inside.reshape(dst_shape)
    assert inside.mean() > 0.3
    assert np.allclose(fine[inside], expected[inside], atol=1e-3)  # trilinear is exact here
    smooth = ndimage.gaussian_filter(_random((12, 14, 10)), 2.0)
    back = resample(resample(smooth, src, dst, dst_shape), dst, src, smooth.shape, fill=np.nan)
    core = (slice(3, 9), slice(3, 11), slice(3, 7))
    assert np.all(np.isfinite(back[core]))
    assert np.max(np.abs(back[core] - smooth[core])) < 0.05 * np.ptp(smooth)


def test_resample_fill_and_edges():
    data = np.arange(4 * 3 * 3, dtype=np.float32).reshape(4, 3, 3) + 10
    shift = np.eye(4)
    shift[0, 3] = -0.4  # destination voxel 0 at source index -0.4: inside voxel 0's box
    out = resample(data, np.eye(4), shift, data.shape, fill=-1)
    assert np.allclose(out[0], data[0])
    shift[0, 3] = -0.6  # outside every source box
    out = resample(data, np.eye(4), shift, data.shape, fill=-1)
    assert np.all(out[0] == -1) and np.all(out[1:] != -1)
    far = np.eye(4)
    far[:3, 3] = 100.5
    assert np.all(resample(data, np.eye(4), far, (2, 2, 2), fill=7.0) == 7.0)


def test_resample_chunking_and_thin_source(monkeypatch):
    data = _random((6, 7, 8))
    dst = _affine(_rotation([0.2, 0.0, 0.1]), [0.3, -0.2, 0.1])
    whole = resample(data, np.eye(4), dst, (6, 7, 8))
    monkeypatch.setattr(geometry, "_CHUNK_POINTS", 50)
    assert np.array_equal(resample(data, np.eye(4), dst, (6, 7, 8)), whole)
    thin = _random((6, 7, 1))
    shift = np.eye(4)
    shift[:2, 3] = 0.5
    out = resample(thin, np.eye(4), shift, (5, 6, 1))
    assert np.allclose(out[..., 0], ndimage.uniform_filter(thin[..., 0], 2)[1:, 1:], atol=1e-4)


def test_resample_accepts_views_and_integer_data():
    labels = np.random.default_rng(0).integers(0, 4, (3, 5, 6, 7)).astype(np.int16)
    view = np.moveaxis(labels, 0, -1)  # (5, 6, 7, 3), not contiguous
    shift = np.eye(4)
    shift[:3, 3] = 0.25
    out = resample(np.moveaxis(view, -1, 0), np.eye(4), shift, (5, 6, 7), order=0)
    assert out.dtype == np.float32 and out.shape == (3, 5, 6, 7)
    assert np.array_equal(out, labels)  # a quarter voxel rounds back to the same voxel


def test_resample_rejects_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        resample(_random((3, 3, 3)), np.eye(4), np.eye(4), (3, 3, 3), order=3)
    with pytest.raises(ValueError, match="shape"):
        resample(_random((3, 3)), np.eye(4), np.eye(4), (3, 3, 3))


@pytest.mark.slow
def test_resample_speed_on_a_brain_sized_volume():
    data = _random((182, 218, 182))
    src = AFFINES["RAS"]
    dst = _affine(_rotation([0.1, 0.05, 0.2]) * 1.05, [-8.0, -10.0, -6.0])
    start = time.perf_counter()
    resample(data, src, dst, data.shape, order=1)
    assert time.perf_counter() - start < 5.0


# --- model grid and foreground -------------------------------------------------------------


@pytest.mark.parametrize("name", list(AFFINES))
def test_model_grid_properties(name):
    affine, shape = AFFINES[name], (40, 50, 30)
    center = np.array([3.0, -7.0, 99.0])
    grid_affine, grid_shape = model_grid(affine, shape, (2.0, 2.0, 2.5), (48, 56), center)
    assert grid_shape[:2] == (48, 56)
    assert np.array_equal(grid_affine[:3, :3], np.diag([2.0, 2.0, 2.5]))
    assert "".join(nib.aff2axcodes(grid_affine)) == "RAS"
    middle = grid_affine @ [(48 - 1) / 2, (56 - 1) / 2, (grid_shape[2] - 1) / 2, 1]
    assert np.allclose(middle[:2], center[:2])
    corners = np.array([[i, j, k, 1] for i in (-0.5, 39.5) for j in (-0.5, 49.5)
                        for k in (-0.5, 29.5)]).T
    z = (affine @ corners)[2]
    grid_lo = grid_affine[2, 3] - 1.25
    grid_hi = grid_lo + 2.5 * grid_shape[2]
    assert grid_lo <= z.min() + 1e-9 and grid_hi >= z.max() - 1e-9  # covers the input
    assert 2.5 * (grid_shape[2] - 1) < np.ptp(z)  # with the fewest slices
    assert np.isclose((grid_lo + grid_hi) / 2, (z.min() + z.max()) / 2)  # centred


def test_model_grid_on_a_matching_grid_reproduces_slices():
    affine = _affine(np.eye(3), [-90.0, -126.0, -72.0])
    grid_affine, grid_shape = model_grid(affine, (182, 218, 182), (1, 1, 1), (182, 218),
                                         affine @ [90.5, 108.5, 0, 1])
    assert grid_shape == (182, 218, 182)
    assert np.allclose(grid_affine, affine)


def test_foreground_center_in_world_mm():
    data = np.random.default_rng(0).normal(10, 1, (20, 24, 16)).astype(np.float32)
    data[4:10, 6:12, 2:8] += 100  # centre index (6.5, 8.5, 4.5)
    volume = Volume(data, AFFINES["oblique"])
    expected = AFFINES["oblique"] @ [6.5, 8.5, 4.5, 1]
    assert np.allclose(foreground_center(volume), expected[:3], atol=1e-6)
    blank = Volume(np.zeros((4, 6, 8), np.float32), AFFINES["RAS"])
    assert np.allclose(foreground_center(blank), (AFFINES["RAS"] @ [1.5, 2.5, 3.5, 1])[:3])


# --- intensity -----------------------------------------------------------------------------


def _two_tissues(seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((20, 20, 20), dtype=bool)
    truth[5:15, 4:16, 6:14] = True
    data = np.where(truth, 100.0, 10.0) + rng.normal(0, 5, truth.shape)
    return data.astype(np.float32), truth


def test_otsu_foreground_separates_two_tissues_despite_outliers():
    data, truth = _two_tissues()
    assert np.array_equal(foreground_mask(data), truth)
    data[0, 0, 0] = 1e6  # a hot voxel must not squeeze the histogram
    mask = foreground_mask(data)
    assert np.sum(mask != truth) == 1
    assert foreground_mask(np.full((3, 3, 3), 4.0)).all()


def test_foreground_of_an_array_flatter_than_its_float_precision_is_everything():
    # a float32 Jacobian of an almost zero field: np.histogram cannot make 256 bins of it
    data = np.ones((8, 8, 8), dtype=np.float32)
    data[::2] = np.nextafter(np.float32(1), np.float32(2))
    assert foreground_mask(data).all()


def test_normalise_zscores_the_foreground():
    data, truth = _two_tissues()
    out = normalise(data)
    assert out.dtype == np.float32 and out.shape == data.shape
    assert abs(float(out[truth].mean())) < 0.05 and abs(float(out[truth].std()) - 1) < 0.05
    assert np.allclose(normalise(3.0 * data + 50.0), out, atol=1e-4)  # contrast-invariant
    assert np.all(np.isfinite(normalise(np.zeros((3, 3, 3)))))
    assert DEFAULT_NORMALISATION == {"kind": "percentile_zscore", "lower_percentile": 0.5,
                                     "upper_percentile": 99.5, "foreground": "otsu"}
    unchanged = normalise(data, {"kind": "none"})
    assert np.array_equal(unchanged, data) and unchanged is not data
    everything = normalise(data, {**DEFAULT_NORMALISATION, "foreground": "all"})
    assert abs(float(everything.mean())) < 1e-3


@pytest.mark.parametrize("spec", [
    {"kind": "histogram"},
    {"kind": "linear", "a_min": 1.0, "a_max": 1.0},
    {**DEFAULT_NORMALISATION, "foreground": "brain"},
    {**DEFAULT_NORMALISATION, "lower_percentile": 60, "upper_percentile": 40},
])
def test_normalise_rejects_unknown_specs(spec):
    with pytest.raises(ValueError):
        normalise(np.ones((3, 3, 3)), spec)


def test_imported_models_normalisations():
    """MONAI's ScaleIntensityRange / ScaleIntensity / NormalizeIntensity(nonzero=True) and
    nnU-Net's z-score over all voxels, as normalise specs."""
    x = np.array([[[0.0, 1.0], [2.0, 4.0]]], dtype=np.float32)
    linear = normalise(x, {"kind": "linear", "a_min": 0.0, "a_max": 2.0, "b_min": -1.0,
                           "b_max": 1.0, "clip": True})
    np.testing.assert_allclose(linear.ravel(), [-1.0, 0.0, 1.0, 1.0])
    unclipped = normalise(x, {"kind": "linear", "a_min": 0.0, "a_max": 2.0})
    np.testing.assert_allclose(unclipped.ravel(), [0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(normalise(x, {"kind": "minmax", "minv": 0.0, "maxv": 2.0})
                               .ravel(), [0.0, 0.5, 1.0, 2.0])
    zscore = {"kind": "percentile_zscore", "lower_percentile": 0.0, "upper_percentile": 100.0,
              "foreground": "all"}
    np.testing.assert_allclose(normalise(x, zscore).ravel(), (x.ravel() - x.mean()) / x.std(),
                               rtol=1e-5)
    nonzero = normalise(x, {**zscore, "foreground": "nonzero", "keep_zeros": True}).ravel()
    inside = x.ravel()[1:]
    assert nonzero[0] == 0.0
    np.testing.assert_allclose(nonzero[1:], (inside - inside.mean()) / inside.std(), rtol=1e-5)


def test_foreground_of_a_head_whose_fat_otsu_would_split_off_keeps_the_whole_head():
    """Air (noise), a large tissue class and a small very bright one (scalp fat): plain Otsu
    splits fat from tissue; the foreground must still be the head, not the fat alone."""
    from uda_core.io.intensity import foreground_mask

    rng = np.random.default_rng(0)
    air = np.abs(rng.normal(0, 20, 50_000))
    tissue = rng.normal(800, 60, 30_000)
    fat = rng.normal(2800, 100, 9_000)
    values = np.concatenate([air, tissue, fat]).astype(np.float32)
    mask = foreground_mask(values)
    assert mask[50_000:].mean() > 0.99 and mask[:50_000].mean() < 0.01
    # an ordinary two-class image keeps Otsu's split
    two = np.concatenate([air, tissue]).astype(np.float32)
    assert foreground_mask(two)[50_000:].all() and not foreground_mask(two)[:50_000].any()
