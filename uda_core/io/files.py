"""Finding labelled volumes on disk and fingerprinting files for provenance."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from uda_core.errors import InputError
from uda_core.io.readers import VOLUME_SUFFIXES, volume_suffix
from uda_core.io.writers import output_stem

LABEL_TAG = "_labels"


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and volume_suffix(path) is not None


def _label_prefix(image: Path) -> str:
    """The image stem up to its last underscore (sub-001_t1 -> sub-001), else the whole stem."""
    return output_stem(image).rsplit("_", 1)[0]


def label_path_for(image: Path) -> Path | None:
    """The label file paired with an image: `<prefix>_labels<ext>` beside it.

    `<prefix>` is the image stem up to its last underscore (sub-001_t1 -> sub-001), or the whole
    stem when it has none (scan -> scan_labels). Any volume extension is accepted.
    """
    prefix = _label_prefix(image)
    for suffix in VOLUME_SUFFIXES:
        candidate = image.parent / f"{prefix}{LABEL_TAG}{suffix}"
        if candidate.is_file() and candidate != image:
            return candidate
    return None


def find_labelled_pairs(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(image, labels) pairs from image files and/or folders holding images with label files.

    A folder contributes every volume in it (not recursive) that is not itself a label file.
    Raises InputError naming the image whose label file is missing, or the empty folder.
    """
    pairs = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            images = sorted(p for p in entry.iterdir()
                            if _is_volume_file(p) and not output_stem(p).endswith(LABEL_TAG))
            if not images:
                raise InputError("holds no image volumes (.nii.gz, .nii, .mgz, .mha, .nrrd)",
                                 entry)
        elif entry.exists():
            images = [entry]
        else:
            raise InputError("does not exist", entry)
        for image in images:
            labels = label_path_for(image)
            if labels is None:
                raise InputError(f"has no label file beside it (expected "
                                 f"{_label_prefix(image)}{LABEL_TAG}"
                                 ".nii.gz)", image)
            pairs.append((image, labels))
    return pairs


def fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (first 16 hex digits), or of a folder's files in name order."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()[:16]
