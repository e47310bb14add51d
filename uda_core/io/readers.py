"""Read one 3D volume (image or label map) from a file or a DICOM folder.

Formats: NIfTI (.nii, .nii.gz) and FreeSurfer MGZ (.mgz) through nibabel; MetaImage
(.mha, .mhd) and NRRD (.nrrd, .nhdr) through SimpleITK; a folder holding one DICOM series
through SimpleITK/GDCM. Every volume comes back with the nibabel convention: array indexed
(i, j, k) and a 4x4 affine from voxel indices to RAS+ world millimetres.

Every problem with the input is one :class:`~uda_core.errors.InputError` line naming the file.
Shape and memory are checked from the header before any voxel is read, so a file that claims
an impossible size is refused at once instead of exhausting memory.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from uda_core.errors import InputError
from uda_core.io.volume import Volume

if TYPE_CHECKING:
    from nibabel.arrayproxy import ArrayProxy
    from nibabel.freesurfer.mghformat import MGHImage
    from nibabel.nifti1 import Nifti1Image

NIBABEL_SUFFIXES = (".nii.gz", ".nii", ".mgz")
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
VOLUME_SUFFIXES = NIBABEL_SUFFIXES + SITK_SUFFIXES

# Flip x and y: ITK/DICOM world coordinates are LPS+, nibabel's are RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_SITK_ITEMSIZE = {
    sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
    sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
    sitk.sitkFloat32: 4, sitk.sitkFloat64: 8,
}
_DICOM_META_TAGS = {
    "modality": "0008|0060",
    "series_description": "0008|103e",
    "series_uid": "0020|000e",
    "manufacturer": "0008|0070",
}


def read_volume(path: str | os.PathLike) -> Volume:
    """Read an image volume.

    Returns:
        Volume with ``data`` float32 of shape (X, Y, Z) (scaling such as NIfTI scl_slope is
        applied), ``affine`` voxel -> RAS+ mm, ``source`` the path, ``header`` the nibabel
        header for NIfTI/MGZ (else None), ``meta`` with "format" and, for DICOM, a few tags.

    Raises:
        InputError: one line naming the file (missing, unknown type, corrupt, not 3D, too
            large for the available memory, NaN/Inf voxels, ...).
    """
    return _read(path, labels=False)


def read_labels(path: str | os.PathLike) -> Volume:
    """Read an integer label map as int16 (X, Y, Z), refusing non-integer or out-of-range values.

    Same formats, geometry and checks as :func:`read_volume`.
    """
    return _read(path, labels=True)


def available_memory_bytes(meminfo: str | os.PathLike = "/proc/meminfo") -> int | None:
    """Bytes of memory the system can give without swapping, or None if unknown.

    Reads ``MemAvailable`` from /proc/meminfo (Linux >= 3.14); on older kernels estimates it as
    MemFree + Buffers + Cached; elsewhere falls back to ``os.sysconf`` (free physical pages).
    Tests monkeypatch this function to simulate a small machine.
    """
    fields: dict[str, int] = {}
    try:
        with open(meminfo, encoding="ascii", errors="replace") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    unit = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
                    fields[name.strip()] = int(parts[0]) * unit
    except OSError:
        fields = {}
    if "MemAvailable" in fields:
        return fields["MemAvailable"]
    if "MemFree" in fields:
        return sum(fields.get(name, 0) for name in ("MemFree", "Buffers", "Cached"))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The recognised volume extension of `path` (lower case, e.g. ".nii.gz"), or None."""
    name = Path(path).name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), None)


# --- internals ---------------------------------------------------------------------------

@dataclass
class _Opened:
    """A volume whose header has been read but whose voxels have not.

    shape: declared array shape in (i, j, k, ...) order; itemsize: bytes per stored value
    (times components); load(as_float32) returns the voxels (with that shape; float32 or the
    stored type) and the voxel -> RAS affine.
    """

    shape: tuple[int, ...]
    itemsize: int
    load: Callable[[bool], tuple[np.ndarray, np.ndarray]]
    header: Any = None
    components: int = 1
    meta: dict = field(default_factory=dict)


def _read(path: str | os.PathLike, labels: bool) -> Volume:
    path = Path(path)
    if not path.exists():
        raise InputError("does not exist", path)
    if path.is_dir():
        opened = _open_dicom_folder(path)
    else:
        suffix = volume_suffix(path)
        if suffix is None:
            raise InputError(
                f"unknown file type {path.suffix or '(no extension)'!r}; expected one of "
                f"{', '.join(VOLUME_SUFFIXES)} or a DICOM folder", path)
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise InputError(f"cannot be opened ({exc.strerror or exc})", path) from exc
        opener = _open_nibabel if suffix in NIBABEL_SUFFIXES else _open_sitk
        opened = opener(path, suffix)

    shape = _checked_shape(opened, path)
    _check_memory(shape, opened.itemsize, 2 if labels else 4, path)
    try:
        with np.errstate(over="ignore", invalid="ignore"):   # a lying scl_slope overflows to
            data, affine = opened.load(not labels)           # Inf: refused below, unwarned
    except MemoryError as exc:
        raise InputError("not enough memory to load its voxels", path) from exc
    except InputError:
        raise
    except Exception as exc:  # any reader failure here means a bad file for the user
        raise InputError(_data_failure(path, exc), path) from exc
    data = data.reshape(shape)
    _check_voxel_size(affine, path)
    _check_finite(data, path)
    if labels:
        data = _as_labels(data, path)
    elif data.dtype != np.float32:
        data = data.astype(np.float32)
    return Volume(data=data, affine=affine, source=str(path), header=opened.header,
                  meta=opened.meta)


#: Voxel edges outside this range (mm) are a header that lies, not a scan
VOXEL_SIZE_RANGE_MM = (1e-3, 1e3)


def _check_voxel_size(affine: np.ndarray, path: Path) -> None:
    """InputError when a voxel edge (a column norm of the affine) is not finite or outside
    VOXEL_SIZE_RANGE_MM: such a header would make resampling build an absurd grid."""
    sizes = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    low, high = VOXEL_SIZE_RANGE_MM
    if not np.all(np.isfinite(sizes)) or np.any(sizes < low) or np.any(sizes > high):
        shown = " x ".join(f"{v:.3g}" for v in sizes)
        raise InputError(f"has an implausible voxel size ({shown} mm; a scan's lie between "
                         f"{low:g} and {high:g} mm): its header is damaged", path)


def _fmt_shape(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def _checked_shape(opened: _Opened, path: Path) -> tuple[int, int, int]:
    """The 3D shape after dropping trailing length-1 axes; InputError if not one 3D volume."""
    shape = tuple(int(n) for n in opened.shape)
    if any(n == 0 for n in shape):
        raise InputError(f"has an empty axis (shape {_fmt_shape(shape)})", path)
    squeezed = shape
    while len(squeezed) > 3 and squeezed[-1] == 1:
        squeezed = squeezed[:-1]
    if len(squeezed) == 4:
        raise InputError(f"is a 4D image with {squeezed[3]} volumes; UDA Studio needs one 3D "
                         "volume", path)
    if len(squeezed) > 4:
        raise InputError(f"is a {len(squeezed)}D image (shape {_fmt_shape(shape)}); UDA Studio "
                         "needs one 3D volume", path)
    if len(squeezed) < 3 or 1 in squeezed:
        raise InputError(f"single slice (shape {_fmt_shape(shape)}): needs a 3D volume", path)
    if opened.components != 1:
        raise InputError(f"has {opened.components} values per voxel (vector or colour image); "
                         "UDA Studio needs one value per voxel", path)
    return squeezed[0], squeezed[1], squeezed[2]  # exactly three axes here


def _check_memory(shape, itemsize: int, out_itemsize: int, path: Path) -> None:
    """Refuse before loading when the stored voxels plus the converted copy cannot fit."""
    needed = int(np.prod(shape, dtype=np.float64) * (itemsize + out_itemsize))
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise InputError(f"too large for memory: its declared size {_fmt_shape(shape)} needs "
                         f"about {_gb(needed)} to load, but only {_gb(available)} is available",
                         path)


def _gb(n_bytes: float) -> str:
    gib = n_bytes / 2**30
    return f"{gib:,.0f} GiB" if gib >= 100 else f"{gib:.3g} GiB"


def _check_finite(data: np.ndarray, path: Path) -> None:
    if data.dtype.kind != "f":
        return
    # A float64 sum of finite float32/float64 voxels cannot overflow to Inf for any realistic
    # volume, so the (cheap, allocation-free) sum is finite exactly when every voxel is.
    with np.errstate(over="ignore", invalid="ignore"):   # Inf voxels: an answer, no warning
        total = np.sum(data, dtype=np.float64)
    if np.isfinite(total):
        return
    n_nan = int(np.count_nonzero(np.isnan(data)))
    n_inf = int(np.count_nonzero(np.isinf(data)))
    if n_nan + n_inf == 0:  # sum overflowed after all: the voxels are finite
        return
    raise InputError(f"contains {n_nan + n_inf} non-finite voxels ({n_nan} NaN, {n_inf} "
                     "Inf); UDA Studio needs finite values", path)


def _as_labels(data: np.ndarray, path: Path) -> np.ndarray:
    """int16 labels; InputError for fractional values or values outside int16."""
    if data.dtype.kind == "f":
        fractional = data != np.round(data)
        n_fractional = int(np.count_nonzero(fractional))
        if n_fractional:
            example = float(data[fractional].flat[0])
            raise InputError(f"is not a label map: {n_fractional} voxels have non-integer "
                             f"values (e.g. {example:g}); labels must be whole numbers", path)
    elif data.dtype.kind not in "iub":
        raise InputError(f"is not a label map: voxel type {data.dtype} is not an integer", path)
    lo, hi = (data.min(), data.max())
    info = np.iinfo(np.int16)
    if lo < info.min or hi > info.max:
        raise InputError(f"label values {lo:g}..{hi:g} do not fit 16-bit labels "
                         f"({info.min}..{info.max})", path)
    return data.astype(np.int16)


def _data_failure(path: Path, exc: Exception) -> str:
    """One line describing why reading the voxels failed."""
    if path.is_dir():
        return f"could not read the DICOM series ({_short_reason(exc)})"
    if _is_gzip_name(path) and (isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile))
                                or not _gzip_stream_ok(path)):
        return "truncated or corrupt gzip data: the file is damaged or incomplete"
    return f"truncated or corrupt voxel data ({_short_reason(exc)})"


def _short_reason(exc: BaseException, limit: int = 160) -> str:
    """The useful part of a library error message, on one line, without file paths."""
    text = str(exc)
    if "ERROR:" in text:  # SimpleITK: "Exception thrown in ...\nsitk::ERROR: the reason"
        text = text.split("ERROR:", 1)[1]
    text = re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", text)  # ITK object addresses
    text = re.sub(r"\"?(/|[A-Za-z]:\\)[^\s\"]*\"?", "(file)", text)  # absolute paths
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_gzip_name(path: Path) -> bool:
    return path.name.lower().endswith((".gz", ".mgz"))


def _gzip_stream_ok(path: Path) -> bool:
    """Whether the whole file decompresses (used only to explain a failure)."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error):
        return False
    return True


def _refuse_non_real(type_name: str, is_complex: bool, path: Path) -> None:
    """Complex (and other non-real) voxels would lose their imaginary part silently."""
    if is_complex:
        raise InputError(f"has complex-valued voxels ({type_name}); give a magnitude image "
                         "(real values)", path)


def _open_nibabel(path: Path, suffix: str) -> _Opened:
    try:
        # typed as FileBasedImage; a .nii/.nii.gz/.mgz loads as a Nifti1Image (or its
        # subclass Nifti2Image) or an MGHImage
        img = cast("Nifti1Image | MGHImage", nib.load(str(path), mmap=False))
        shape = tuple(img.shape)
        itemsize = img.get_data_dtype().itemsize
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # any nibabel failure here means an unreadable file
        raise InputError(_header_failure(path, suffix, exc), path) from exc
    stored = img.get_data_dtype()
    _refuse_non_real(str(stored), stored.kind == "c", path)
    if stored.kind not in "iufb":
        raise InputError(f"has voxels of type {stored} (e.g. RGB), not one real value each",
                         path)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError("has an invalid voxel-to-world transform (affine)", path)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("has a degenerate voxel-to-world transform (zero voxel size)", path)

    def load(as_float32: bool) -> tuple[np.ndarray, np.ndarray]:
        full = img
        if suffix == ".nii":
            proxy = cast("ArrayProxy", img.dataobj)  # an image read from a file holds one
            _check_file_size(path, int(proxy.offset), shape, itemsize, path)
        if _is_gzip_name(path):
            # Decompress the whole stream ourselves: unlike nibabel's partial read, reading to
            # the end checks gzip's CRC, so damaged data is an error rather than garbage.
            with gzip.open(path, "rb") as stream:
                full = type(img).from_bytes(stream.read())
        if as_float32:
            return full.get_fdata(dtype=np.float32), affine
        return np.asarray(full.dataobj), affine

    fmt = "MGZ" if suffix == ".mgz" else "NIfTI"
    return _Opened(shape=shape, itemsize=itemsize, load=load, header=img.header,
                   meta={"format": fmt, "reader": "nibabel"})


def _header_failure(path: Path, suffix: str, exc: Exception) -> str:
    kind = "MGZ" if suffix == ".mgz" else "NIfTI"
    if _is_gzip_name(path):
        with open(path, "rb") as handle:
            magic = handle.read(2)
        if magic != b"\x1f\x8b":
            return (f"is not gzip-compressed although its name ends in {suffix} (not a "
                    f"{kind} image, or a damaged file)")
        if not _gzip_stream_ok(path):
            return "truncated or corrupt gzip data: the file is damaged or incomplete"
    size = path.stat().st_size
    if size < 348:
        return f"is not a {kind} image (only {size} bytes, smaller than a header)"
    if isinstance(exc, nib.filebasedimages.ImageFileError):
        return f"is not a {kind} image (no valid {kind} header)"
    return f"is not a {kind} image (unreadable header: {_short_reason(exc)})"


def _check_file_size(data_file: Path, offset: int, shape, itemsize: int, path: Path) -> None:
    """InputError if uncompressed voxel data (from `offset` in `data_file`) is cut short."""
    needed = int(np.prod(shape, dtype=np.int64)) * itemsize
    held = max(0, data_file.stat().st_size - offset)
    if held < needed:
        where = "the file" if data_file == path else f"its data file {data_file.name}"
        raise InputError(f"truncated: the header declares {needed} bytes of voxel data but "
                         f"{where} holds only {held}", path)


@dataclass
class _RawLayout:
    """Where a MetaImage/NRRD file keeps its voxels: file, byte offset, and whether raw."""

    data_file: Path
    offset: int
    raw: bool


def _sitk_layout(path: Path, suffix: str) -> _RawLayout | None:
    """Voxel storage from a .mha/.mhd/.nrrd/.nhdr header; None when it cannot be told simply.

    Used only to give precise messages (missing data file, truncated raw data); SimpleITK
    still does the reading.
    """
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    text = head.decode("latin-1")
    if suffix in (".mha", ".mhd"):
        fields = dict(re.findall(r"^\s*(\w+)[ \t]*=[ \t]*(.*?)[ \t]*\r?$", text,
                                 flags=re.MULTILINE))   # an empty value stays on its line
        match = re.search(r"^\s*ElementDataFile\s*=.*?$\n?", text, flags=re.MULTILINE)
        if match is None or fields.get("HeaderSize", "0") != "0":
            return None
        name = fields.get("ElementDataFile", "")
        raw = fields.get("CompressedData", "False").lower() != "true"
        if name.upper() == "LOCAL":
            return _RawLayout(path, match.end(), raw)
    else:
        end = re.search(r"\r?\n\r?\n", text)  # inline data follow the first blank line
        header = text if end is None else text[: end.start()]
        fields = {key.strip().lower().replace(" ", ""): value.strip() for key, value in
                  re.findall(r"^([^:#\n][^:\n]*):=?\s*(.*?)\s*$", header, flags=re.MULTILINE)}
        if "byteskip" in fields or "lineskip" in fields:
            return None
        name = fields.get("datafile", "")
        raw = fields.get("encoding", "raw").lower() == "raw"
        if not name:
            if end is None:
                return None
            return _RawLayout(path, end.end(), raw)
    if not name or name.upper().startswith("LIST") or "%" in name or " " in name:
        return None  # a list or pattern of files
    return _RawLayout(path.parent / name, 0, raw)


def _sitk_geometry(spacing, origin, direction, dim: int) -> np.ndarray:
    """RAS affine from ITK geometry (LPS): diag(-1,-1,1,1) @ [[D diag(spacing), origin], [0, 1]].

    Only the first three axes are used; higher axes must have been checked to be length 1.
    """
    n = min(dim, 3)
    d = np.eye(3)
    d[:n, :n] = np.asarray(direction, dtype=np.float64).reshape(dim, dim)[:n, :n]
    s = np.ones(3)
    s[:n] = np.asarray(spacing, dtype=np.float64)[:n]
    o = np.zeros(3)
    o[:n] = np.asarray(origin, dtype=np.float64)[:n]
    lps = np.eye(4)
    lps[:3, :3] = d * s  # scales column c by spacing[c]
    lps[:3, 3] = o
    return LPS_TO_RAS @ lps


def _sitk_array(image: sitk.Image, as_float32: bool) -> np.ndarray:
    """Voxels of a SimpleITK image in (i, j, k, ...) order (GetArrayFromImage gives (k, j, i))."""
    view = sitk.GetArrayViewFromImage(image)
    data = view.astype(np.float32) if as_float32 else np.array(view)
    return data.transpose(tuple(range(data.ndim))[::-1])


def _read_sitk_information(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _open_sitk(path: Path, suffix: str) -> _Opened:
    fmt = "MetaImage" if suffix in (".mha", ".mhd") else "NRRD"
    layout = _sitk_layout(path, suffix)
    if layout is not None and not layout.data_file.is_file():
        name = layout.data_file.name
        if not name.isprintable() or len(name) > 200:   # a damaged header's bytes, shown as
            name = ascii(name[:60])                      # one line of plain characters
        raise InputError(f"its voxel data file {name} is missing (it must sit "
                         f"next to the {suffix} header)", path)
    try:
        reader = _read_sitk_information(path)
        shape = tuple(int(n) for n in reader.GetSize())
        dim = reader.GetDimension()
        components = int(reader.GetNumberOfComponents())
        itemsize = _SITK_ITEMSIZE.get(reader.GetPixelID(), 8) * components
        geometry = (reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
        pixel_type = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    except RuntimeError as exc:
        raise InputError(f"is not a readable {fmt} image ({_short_reason(exc)})", path) from exc
    _refuse_non_real(pixel_type, "complex" in pixel_type.lower(), path)
    affine = _sitk_geometry(*geometry, dim)

    def load(as_float32: bool) -> tuple[np.ndarray, np.ndarray]:
        if layout is not None and layout.raw:
            _check_file_size(layout.data_file, layout.offset, shape, itemsize, path)
        return _sitk_array(reader.Execute(), as_float32), affine

    return _Opened(shape=shape, itemsize=itemsize, load=load,
                   components=components, meta={"format": fmt, "reader": "SimpleITK"})


@contextlib.contextmanager
def _quiet_itk():
    """Silence ITK's console warnings (e.g. 'No Series were found') for the duration."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _open_dicom_folder(path: Path) -> _Opened:
    try:
        with _quiet_itk():
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    except RuntimeError as exc:
        raise InputError(f"cannot scan the folder for DICOM files ({_short_reason(exc)})",
                         path) from exc
    if not series:
        raise InputError("is a folder with no DICOM series in it; pass a volume file or a "
                         "folder holding one DICOM series", path)
    if len(series) > 1:
        raise InputError(f"holds {len(series)} DICOM series; pass the folder of one series "
                         "(move each series into its own folder)", path)
    with _quiet_itk():
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
    try:
        first = _read_sitk_information(Path(files[0]))
        size = [int(n) for n in first.GetSize()] + [1, 1]
        components = int(first.GetNumberOfComponents())
        itemsize = _SITK_ITEMSIZE.get(first.GetPixelID(), 8) * components
        meta = {"format": "DICOM", "reader": "SimpleITK", "dicom_files": len(files)}
        for name, tag in _DICOM_META_TAGS.items():
            if first.HasMetaDataKey(tag):
                meta[name] = first.GetMetaData(tag).strip()
    except RuntimeError as exc:
        raise InputError(f"has an unreadable DICOM file {Path(files[0]).name} "
                         f"({_short_reason(exc)})", path) from exc
    # One file per slice, or one multi-frame file holding them all. The slice spacing and
    # order come from ImagePositionPatient, which ITK sorts out while reading the voxels, so
    # the affine is taken from the image that `load` reads.
    shape = (size[0], size[1], size[2] * len(files))

    def load(as_float32: bool) -> tuple[np.ndarray, np.ndarray]:
        if len(files) == 1:
            file_reader = sitk.ImageFileReader()
            file_reader.SetFileName(files[0])
            image = file_reader.Execute()
        else:
            series_reader = sitk.ImageSeriesReader()
            series_reader.SetFileNames(files)
            series_reader.MetaDataDictionaryArrayUpdateOn()
            with _quiet_itk():  # ITK's "non uniform sampling" warning: checked below instead
                image = series_reader.Execute()
            _check_slice_spacing(series_reader, len(files), image, path)
        affine = _sitk_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                                image.GetDimension())
        return _sitk_array(image, as_float32), affine

    return _Opened(shape=shape, itemsize=itemsize, load=load,
                   components=components, meta=meta)


def _check_slice_spacing(reader: sitk.ImageSeriesReader, n_slices: int, image: sitk.Image,
                         path: Path) -> None:
    """InputError if the slices of a series are not evenly spaced (missing or mixed slices).

    Positions are the ImagePositionPatient of each slice projected on the slice normal (the
    third column of the series' direction), in mm.
    """
    normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    positions = []
    for index in range(n_slices):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            return  # no positions to check (ITK then stacks the files as they come)
        try:
            xyz = [float(v) for v in reader.GetMetaData(index, "0020|0032").split("\\")]
        except ValueError:
            return
        if len(xyz) != 3:
            return
        positions.append(float(np.dot(normal, xyz)))
    gaps = np.diff(np.sort(positions))
    if gaps.size == 0:
        return
    typical = float(np.median(gaps))
    if typical <= 1e-6:
        raise InputError(f"has {n_slices} slices but several share one position: not one "
                         "3D series (e.g. several echoes or time points)", path)
    if float(np.max(np.abs(gaps - typical))) > 0.01 * typical + 1e-3:
        raise InputError(f"has unevenly spaced slices ({gaps.min():.3g} to {gaps.max():.3g} "
                         "mm apart): slices are missing or the series mixes stacks", path)
