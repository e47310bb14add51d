"""The anatomical template behind the demo data: MNI ICBM152 2009a T1, GM and WM maps.

`extract_template` derives small uint8 copies of the maps that nilearn ships (cropped to the
brain) so that the application needs neither nilearn nor a download; `load_template` reads
them back as float32 volumes in 0..1; `tissue_labels` turns the maps into the four-class
label map of the demo benchmark (background, CSF, GM, WM).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np

from uda_core.errors import InputError
from uda_core.io.atomic import atomic_output
from uda_core.io.volume import Volume

CLASS_NAMES = ("background", "CSF", "GM", "WM")
"""Label values 0..3 of the demo benchmark, in index order."""

MAP_NAMES = ("t1", "gm", "wm")
TEMPLATE_FILES = {name: f"mni152_2009a_{name}.nii.gz" for name in MAP_NAMES}
NILEARN_FILES = {
    name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in MAP_NAMES
}
MASK_THRESHOLD = 0.02
"""Brain mask = template T1 (scaled to 0..1) above this value."""

NOTICE = """\
MNI ICBM152 2009a nonlinear symmetric template (T1, GM and WM maps)
===================================================================

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software
and its documentation for any purpose and without fee is hereby granted, provided that the
above copyright notice appear in all copies. The authors and McGill University make no
representations about the suitability of this software for any purpose. It is provided
"as is" without express or implied warranty. The authors are not responsible for any data
loss, equipment damage, property loss, or injury to subjects or patients resulting from the
use or misuse of this software package.

Source: the MNI ICBM152 2009a nonlinear symmetric template, 1 mm, skull-stripped, as shipped
with the nilearn package (nilearn/datasets/data/mni_icbm152_{{t1,gm,wm}}_tal_nlin_sym_09a_
converted.nii.gz, values 0..255).

Derived here (uda_core.synth.template.extract_template): the three maps cropped to the
bounding box of the brain (T1 > 2% of full scale, or any GM/WM probability) plus a
{margin:g} mm margin, stored as uint8 (the original 0..255 values, unchanged) with the
affine shifted accordingly: {files}.
Cropped grid: {shape} voxels at 1 mm, RAS.
"""


def _nilearn_data_dir() -> Path:
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "extract_template needs nilearn, which ships the MNI ICBM152 maps: "
            "pip install 'uda-studio[regen]' (or pip install nilearn)"
        ) from exc
    return Path(nilearn.__file__).resolve().parent / "datasets" / "data"


def write_nifti_atomic(image: nib.Nifti1Image, path: Path) -> Path:
    """Write `image` to `path` (.nii.gz) via a temporary file in the same folder + rename.

    gzip level 6 with a zero timestamp: the same image always gives the same bytes, so
    regenerated resources do not show up as changed files.
    """
    path = Path(path)
    if not path.name.endswith(".nii.gz"):
        raise ValueError(f"expected a .nii.gz path, got {path}")
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
    return path


def extract_template(out_dir, source_dir=None, margin_mm: float = 4.0) -> dict[str, Path]:
    """Write the cropped uint8 template maps and their NOTICE.txt into `out_dir`.

    Args:
        out_dir: destination folder (created if needed); gets mni152_2009a_{t1,gm,wm}.nii.gz
            and NOTICE.txt (the MNI copyright and permission notice, and what was derived).
        source_dir: folder holding nilearn's mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted
            .nii.gz; default: the one inside the installed nilearn package.
        margin_mm: margin kept around the brain bounding box (mm); voxels beyond the source
            field of view are zero-padded.

    Returns:
        {"t1": path, "gm": path, "wm": path, "notice": path}.
    """
    source_dir = _nilearn_data_dir() if source_dir is None else Path(source_dir)
    images = {}
    for name, file_name in NILEARN_FILES.items():
        path = source_dir / file_name
        if not path.is_file():
            raise InputError(f"MNI ICBM152 map {file_name} not found", path)
        try:
            img = cast(nib.Nifti1Image, nib.load(str(path)))  # a .nii.gz file
            data = np.asarray(img.dataobj)
        except Exception as exc:
            raise InputError(f"cannot read the MNI ICBM152 map: {exc}", path) from exc
        images[name] = (img, np.clip(np.rint(data), 0, 255).astype(np.uint8))

    affine = images["t1"][0].affine
    shape = images["t1"][1].shape
    for name, (img, data) in images.items():
        if data.shape != shape or not np.allclose(img.affine, affine):
            raise InputError("MNI maps do not share one grid", source_dir / NILEARN_FILES[name])

    brain = images["t1"][1] > round(MASK_THRESHOLD * 255)
    brain |= images["gm"][1] > 0
    brain |= images["wm"][1] > 0
    voxel_mm = np.linalg.norm(affine[:3, :3], axis=0)
    margin = np.ceil(margin_mm / voxel_mm).astype(int)
    index = np.nonzero(brain)
    lo = np.array([ax.min() for ax in index]) - margin
    hi = np.array([ax.max() for ax in index]) + 1 + margin
    new_shape = tuple(int(v) for v in hi - lo)

    # Copy the overlap of [lo, hi) with the source array; the rest stays zero (padding).
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, shape)
    src = tuple(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True))
    dst = tuple(slice(a - l0, b - l0) for a, b, l0 in zip(src_lo, src_hi, lo, strict=True))
    new_affine = affine.copy()
    new_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (_, data) in images.items():
        cropped = np.zeros(new_shape, dtype=np.uint8)
        cropped[dst] = data[src]
        out = nib.Nifti1Image(cropped, new_affine)
        out.header.set_data_dtype(np.uint8)
        out.header.set_xyzt_units("mm")
        out.set_sform(new_affine, code=4)  # 4 = MNI space
        out.set_qform(new_affine, code=4)
        written[name] = write_nifti_atomic(out, out_dir / TEMPLATE_FILES[name])

    notice = NOTICE.format(
        margin=margin_mm,
        files=", ".join(TEMPLATE_FILES[n] for n in MAP_NAMES),
        shape=" x ".join(str(s) for s in new_shape),
    )
    notice_path = out_dir / "NOTICE.txt"
    with atomic_output(notice_path, overwrite=True) as tmp:
        tmp.write_text(notice, encoding="utf-8")
    written["notice"] = notice_path
    return written


def default_template_dir() -> Path:
    """The template folder of the shipped resources (uda_core.io.resources.resources_dir)."""
    from uda_core.io.resources import resources_dir

    return resources_dir() / "template"


def load_template(dir=None) -> dict[str, Volume]:
    """Read the template maps written by `extract_template`.

    Args:
        dir: folder with mni152_2009a_{t1,gm,wm}.nii.gz; default `default_template_dir()`.

    Returns:
        {"t1", "gm", "wm"}: Volume with float32 data (X, Y, Z) in 0..1 (uint8 / 255), the
        affine mapping voxels to RAS world mm (1 mm voxels, MNI space).
    """
    folder = default_template_dir() if dir is None else Path(dir)
    maps = {}
    for name in MAP_NAMES:
        path = folder / TEMPLATE_FILES[name]
        if not path.is_file():
            raise InputError(
                "template map not found (regenerate it with "
                "uda_core.synth.template.extract_template, which needs nilearn)",
                path,
            )
        try:
            img = cast(nib.Nifti1Image, nib.load(str(path)))  # a .nii.gz file
            data = np.asarray(img.dataobj, dtype=np.float32) / np.float32(255.0)
        except Exception as exc:
            raise InputError(f"cannot read the template map: {exc}", path) from exc
        maps[name] = Volume(data=data, affine=img.affine, source=str(path), header=img.header)
    shapes = {v.shape for v in maps.values()}
    if len(shapes) != 1:
        raise InputError("template maps do not share one grid", folder)
    return maps


def tissue_labels(t1, gm, wm) -> tuple[np.ndarray, np.ndarray]:
    """The demo benchmark's label rule, voxel by voxel.

    Args:
        t1, gm, wm: arrays (or Volumes) of one shape: template T1 intensity and GM / WM
            probabilities, all scaled to 0..1.

    Returns:
        labels: int16 array, 0 background (t1 <= 0.02), else 1 + argmax(P_CSF, P_GM, P_WM)
            (1 CSF, 2 GM, 3 WM; ties go to the lower label).
        p_csf: float32 array, clip(1 - gm - wm, 0, 1) inside the mask, 0 outside.
    """
    t1, gm, wm = (np.asarray(getattr(a, "data", a), dtype=np.float32) for a in (t1, gm, wm))
    mask = t1 > MASK_THRESHOLD
    p_csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
    tissue = np.argmax(np.stack([p_csf, gm, wm]), axis=0)
    labels = np.where(mask, tissue + 1, 0).astype(np.int16)
    return labels, p_csf.astype(np.float32)
