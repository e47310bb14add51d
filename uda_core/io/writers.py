"""Write volumes as NIfTI, atomically and without ever replacing an input.

Outputs keep the input's grid: the stored sform is ``volume.affine`` (exactly, for any affine
that float32 can hold, which includes every affine read from a NIfTI file), and the header
mirrors the input's NIfTI header where there is one (qform/sform codes, units).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np

from uda_core.errors import InputError
from uda_core.io.atomic import atomic_output
from uda_core.io.volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_STEM_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mha", ".mhd", ".nrrd", ".nhdr")
_NIFTI_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.uint16, np.int32,
                                       np.uint32, np.float32, np.float64)}
_XFORM_SCANNER = 1


def output_stem(path: str | os.PathLike) -> str:
    """File name without its volume extension (.nii.gz, .nii, .mgz, .mha, .mhd, .nrrd, .nhdr).

    A folder (e.g. a DICOM series) gives the folder name. Other names are returned whole.
    """
    name = Path(path).name
    if Path(path).is_dir():
        return name
    lower = name.lower()
    for suffix in _STEM_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def write_volume(volume: Volume, path: str | os.PathLike, *, dtype=None, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write `volume` to a NIfTI file (.nii or .nii.gz) and return its path.

    Args:
        volume: data (X, Y, Z) (or more axes, e.g. (X, Y, Z, 1, 3) for a vector field) and
            a voxel -> RAS mm affine, written as the sform (and the qform when it can hold it).
        path: the output file; its folder must exist.
        dtype: stored type (numpy dtype or name, e.g. "uint8"). Default: the data's type
            (bool -> uint8, float16 -> float32, int64 -> int32 when the values fit).
            Whole-number data stored as an integer type is written exactly with
            scl_slope=1, scl_inter=0; fractional data stored as an integer type is scaled by
            nibabel (slope/intercept chosen to use the type's range).
        overwrite: replace an existing file. Without it an existing file is an InputError.
        inputs: further paths that must never be written onto (the run's inputs).
            ``volume.source`` is always one of them, whatever `overwrite` says.

    The file is written to a temporary name in the same folder and then moved into place,
    so a crash never leaves a half-written output (nor replaces a good one).
    """
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise InputError("can only write NIfTI files: the name must end in .nii or .nii.gz",
                         path)
    protected = [p for p in (volume.source, *inputs) if p is not None]
    if any(_same_path(path, p) for p in protected):
        raise InputError("is an input of this run; refusing to overwrite it", path)
    if path.is_dir():
        raise InputError("is a folder; expected a .nii or .nii.gz file name", path)
    if not path.parent.is_dir():
        raise InputError(f"cannot be written: folder {path.parent} does not exist", path)
    if path.exists() and not overwrite:
        raise _refuse_existing(path)

    image = _nifti_image(volume, dtype)
    try:
        with atomic_output(path, overwrite=overwrite, exists_error=_refuse_existing) as temporary:
            nib.save(image, str(temporary))
    except OSError as exc:
        raise InputError(f"cannot be written ({exc.strerror or exc})", path) from exc
    return path


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Same file (hard or symbolic links included), or the same normalised path."""
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _refuse_existing(path: Path) -> InputError:
    return InputError("already exists; refusing to overwrite it (pass overwrite=True)", path)


def _storage(data: np.ndarray, dtype) -> tuple[np.ndarray, np.dtype, bool]:
    """(array to hand to nibabel, stored dtype, exact) where exact means slope 1 / inter 0."""
    data = np.asarray(data)
    if dtype is None:
        target = data.dtype
        if target == np.bool_:
            target = np.dtype(np.uint8)
        elif target == np.float16:
            target = np.dtype(np.float32)
        elif target in (np.dtype(np.int64), np.dtype(np.uint64)):
            target = np.dtype(np.int32)
    else:
        target = np.dtype(dtype)
    if target not in _NIFTI_DTYPES:
        raise ValueError(f"cannot store {target} in NIfTI; use one of "
                         f"{', '.join(sorted(str(t) for t in _NIFTI_DTYPES))}")
    if target.kind == "f":
        return data.astype(target, copy=False), target, True
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        return data, target, False  # fractional values: let nibabel pick slope/intercept
    if data.size:
        lo, hi = data.min(), data.max()
        info = np.iinfo(target)
        if lo < info.min or hi > info.max:
            raise ValueError(f"values {lo:g}..{hi:g} do not fit {target}")
    return data.astype(target, copy=False), target, True


def _nifti_image(volume: Volume, dtype) -> nib.Nifti1Image:
    """A NIfTI-1 image of `volume` whose header mirrors the input's NIfTI header if any."""
    data, target, exact = _storage(volume.data, dtype)
    affine = np.asarray(volume.affine, dtype=np.float64)
    source = volume.header if isinstance(volume.header, nib.Nifti1Header) else None
    header = nib.Nifti1Header()
    header.set_data_dtype(target)
    if source is not None:
        qform_code = int(source["qform_code"])
        sform_code = int(source["sform_code"]) or qform_code or _XFORM_SCANNER
        header["xyzt_units"] = source["xyzt_units"]
    else:
        qform_code = sform_code = _XFORM_SCANNER
        header.set_xyzt_units(xyz="mm")
    image = nib.Nifti1Image(data, affine, header=header)
    header = image.header
    header.set_sform(affine, code=sform_code)
    header.set_qform(affine, code=qform_code)
    if qform_code and not np.allclose(header.get_qform(), affine, rtol=0, atol=1e-4):
        header.set_qform(affine, code=0)  # a sheared affine: no qform rather than a wrong one
    if exact:
        header.set_slope_inter(1.0, 0.0)
    else:
        header.set_slope_inter(None, None)
    header["cal_min"] = header["cal_max"] = 0.0
    return image
