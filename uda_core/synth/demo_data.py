"""Write the demo benchmark to disk: a few subjects seen by every domain, plus a manifest.

Layout:
    out_dir/manifest.json
    out_dir/<domain>/sub-XXX_<domain>.nii.gz    image, int16 with a scale factor (scl_slope)
    out_dir/<domain>/sub-XXX_labels.nii.gz      labels, uint8 (0 background, 1 CSF, 2 GM, 3 WM)
Files are written atomically (temporary file in the same folder, then os.replace); an
existing demo set in out_dir is replaced file by file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from uda_core import __version__
from uda_core.io.volume import Volume
from uda_core.synth.domains import ANATOMY_PADDING_MM, make_subject, resolve_domain
from uda_core.synth.head import HEAD_PADDING_MM
from uda_core.synth.template import CLASS_NAMES, write_nifti_atomic

MANIFEST_FORMAT = "uda-demo-data"
MANIFEST_VERSION = 1


NOISE_QUANTA = 3.0
"""Images are stored in steps of noise sigma / NOISE_QUANTA (the rounding adds < 1 % to the
noise variance and keeps the gzip files small)."""


def _nifti(volume: Volume, dtype) -> nib.Nifti1Image:
    """A NIfTI image of `volume` stored as `dtype`; int16 images get a scale factor
    (scl_slope): the larger of peak / 32000 and the noise sigma (volume.meta["noise_sigma"],
    if given) / NOISE_QUANTA."""
    data = np.asarray(volume.data)
    if np.dtype(dtype) == np.int16:
        peak = float(np.abs(data).max()) if data.size else 0.0
        slope = max(peak / 32000.0, float(volume.meta.get("noise_sigma", 0.0)) / NOISE_QUANTA)
        slope = slope if slope > 0 else 1.0
        stored = np.clip(np.rint(data / slope), -32768, 32767).astype(np.int16)
    else:
        slope = 1.0
        stored = data.astype(dtype)
    img = nib.Nifti1Image(stored, volume.affine)
    img.header.set_data_dtype(dtype)
    img.header.set_slope_inter(slope, 0.0)
    img.header.set_xyzt_units("mm")
    img.set_sform(volume.affine, code=1)  # 1 = scanner anatomical
    img.set_qform(volume.affine, code=1)
    return img


def subject_id(subject_index: int) -> str:
    """'sub-007' style identifier (at least three digits)."""
    return f"sub-{int(subject_index):03d}"


def write_demo_data(
    out_dir,
    subjects=range(100, 103),
    domains=("t1", "protocol", "t2", "pd"),
    spacing_mm: float = 2.0,
    seed: int = 0,
    progress: bool = True,
    *,
    template=None,
    heads: bool = True,
) -> dict:
    """Simulate `subjects` x `domains` and write them under `out_dir` (see module doc).

    Args:
        out_dir: destination folder (created if needed).
        subjects: subject indices (>= 0); each one's anatomy depends only on (seed, index).
        domains: domain names (see domains.DOMAINS) or Domain objects.
        spacing_mm: isotropic output voxel size (mm).
        seed: data-set seed.
        progress: show a tqdm progress bar (one step per subject).
        template: passed to make_subject (None = resources/template).
        heads: whole heads (scalp, skull, fat, eyes, neck, noisy air; every non-brain voxel
            background in the labels), or brains alone (skull-stripped, as before).

    Returns:
        The manifest (also written to out_dir/manifest.json): format, version, seed,
        spacing_mm, classes, domains (parameters), subjects (id, index, per-domain files
        relative to out_dir, with shape and orientation).
    """
    out_dir = Path(out_dir)
    chosen = [resolve_domain(d) for d in domains]
    subjects = [int(s) for s in subjects]
    for domain in chosen:
        (out_dir / domain.name).mkdir(parents=True, exist_ok=True)

    records = []
    bar = tqdm(subjects, desc="demo data", unit="subject", disable=not progress)
    for index in bar:
        sid = subject_id(index)
        bar.set_postfix_str(sid)
        volumes = make_subject(index, chosen, spacing_mm=spacing_mm, seed=seed,
                               template=template, heads=heads)
        files = {}
        for domain in chosen:
            image, labels = volumes[domain.name]
            image_rel = f"{domain.name}/{sid}_{domain.name}.nii.gz"
            labels_rel = f"{domain.name}/{sid}_labels.nii.gz"
            write_nifti_atomic(_nifti(image, np.int16), out_dir / image_rel)
            write_nifti_atomic(_nifti(labels, np.uint8), out_dir / labels_rel)
            files[domain.name] = {
                "image": image_rel,
                "labels": labels_rel,
                "shape": list(image.shape),
                "orientation": image.orientation,
            }
        records.append({"id": sid, "index": index, "files": files})

    padding = HEAD_PADDING_MM if heads else ANATOMY_PADDING_MM
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "generator": f"uda_core.synth (uda-studio {__version__})",
        "template": "MNI ICBM152 2009a nonlinear symmetric (see resources/template/NOTICE.txt)",
        "seed": int(seed),
        "spacing_mm": float(spacing_mm),
        "heads": bool(heads),
        "field_of_view": (f"template brain box + {padding:g} mm on each side"
                          + (" (a whole head: scalp, skull, eyes, neck; non-brain voxels "
                             "are background)" if heads else " (brain only)")),
        "classes": list(CLASS_NAMES),
        "labels_rule": (
            "1 mm: mask = deformed template T1 > 0.02, P_CSF = clip(1 - P_GM - P_WM, 0, 1); "
            "output grid: argmax of area-averaged fractions (background, CSF, GM, WM)"
        ),
        "domains": {d.name: d.to_dict() for d in chosen},
        "subjects": records,
    }
    path = out_dir / "manifest.json"
    tmp = path.with_name(f".manifest.tmp{os.getpid()}.json")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return manifest
