"""npe2 reader: MRI volumes (NIfTI, MGZ, MetaImage, NRRD, DICOM series folders) for napari.

Everything is read by :mod:`uda_core.io.readers` and placed in napari's (S, P, L) mm world by
:mod:`app.layers`. Files named like label maps (``*_seg``, ``*_dseg``, ``*_labels``,
``*_label``, ``*_mask``, ``aseg``) are read as integer labels and become Labels layers with
class colours; everything else becomes an Image layer.

:func:`napari_get_reader` answers None for what it cannot read, so napari may try another
plugin. Problems with a file it accepted (corrupt, not 3D, non-integer labels, ...) are
raised as uda_core's one-line :class:`~uda_core.errors.InputError` ("PATH: problem").
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from uda_core.io.readers import read_labels, read_volume, volume_suffix
from uda_core.io.writers import output_stem

from .layers import LayerDataTuple, image_layer, labels_layer

ReaderFunction = Callable[[str | list[str]], list[LayerDataTuple]]

#: class names of the demo models, used for label maps whose values fit them (max <= 3).
TISSUE_CLASSES = ("background", "CSF", "GM", "WM")
_LABEL_STEM = re.compile(r"(^|[_\-.+])(seg|dseg|labels?|mask|aseg)$", re.IGNORECASE)
_DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
_DICOM_FILES_SNIFFED = 32


def napari_get_reader(path: str | list[str]) -> ReaderFunction | None:
    """The reader for ``path`` (a file, a DICOM folder, or a list of them), or None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_readable(p) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """One layer per path: Labels for label-map names, Image otherwise.

    Raises:
        InputError: "PATH: problem" for a file that cannot be used.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [_read_one(Path(p)) for p in paths]


def is_label_name(path: str | os.PathLike) -> bool:
    """Whether the file name (without its volume extension) marks a label map."""
    return bool(_LABEL_STEM.search(output_stem(path)))


def default_class_names(max_label: int) -> list[str]:
    """background/CSF/GM/WM when ``max_label`` <= 3, else background, "class 1".."class k"."""
    if max_label <= len(TISSUE_CLASSES) - 1:
        return list(TISSUE_CLASSES)
    return ["background"] + [f"class {k}" for k in range(1, int(max_label) + 1)]


def _readable(path: str | os.PathLike) -> bool:
    path = Path(path)
    if path.is_dir():
        return _looks_like_dicom_folder(path)
    return volume_suffix(path) is not None


def _looks_like_dicom_folder(folder: Path) -> bool:
    """Whether a few of the folder's files carry a DICOM suffix or the 'DICM' preamble tag."""
    try:
        files = sorted(entry for entry in folder.iterdir() if entry.is_file())
    except OSError:
        return False
    for entry in files[:_DICOM_FILES_SNIFFED]:
        if entry.suffix.lower() in _DICOM_SUFFIXES:
            return True
        try:
            with open(entry, "rb") as handle:
                if handle.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            continue
    return False


def _read_one(path: Path) -> LayerDataTuple:
    name = output_stem(path)
    if path.is_file() and is_label_name(path):
        volume = read_labels(path)
        max_label = int(volume.data.max()) if volume.data.size else 0
        return labels_layer(volume.data, volume.affine, default_class_names(max_label), name,
                            metadata={"source": volume.source})
    return image_layer(read_volume(path), name)
