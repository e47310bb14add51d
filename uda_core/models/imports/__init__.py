"""Networks from elsewhere as UDA Studio bundles: MONAI bundles and nnU-Net v2 result folders,
as folders or zip files, imported without running any of their code.

:func:`import_model` returns a validated 3D :class:`~uda_core.models.bundle.ModelBundle`
(``imported`` says where it came from); ``uda import-model`` saves it, and
:func:`~uda_core.models.bundle.load_model` calls this for a folder or such a zip, so
``--model`` takes them directly. See monai_bundle.py and nnunet.py for what is read and what
is refused; files.py for the checks on folders and zips; limits.py for the caps on declared
sizes (network widths, window, weight shapes), checked before anything is built or loaded.
"""

from __future__ import annotations

import datetime as _dt
import os
import zipfile
from pathlib import Path, PurePosixPath

from uda_core import __version__
from uda_core.errors import ModelError
from uda_core.models.bundle.checks import validate
from uda_core.models.bundle.format import ModelBundle
from uda_core.models.imports import monai_bundle, nnunet
from uda_core.models.imports.files import extracted, zip_members

__all__ = ["import_model", "is_importable"]


def _zip_root(members: list[str]) -> tuple[str, str] | None:
    """(format, prefix inside the zip) of a MONAI bundle or nnU-Net folder zip, else None."""
    for name in members:
        if name.endswith(monai_bundle.METADATA):
            return monai_bundle.FORMAT, name[:-len(monai_bundle.METADATA)]
    for name in members:
        if name.endswith(nnunet.PLANS):
            prefix = name[:-len(nnunet.PLANS)]
            if any(PurePosixPath(m[len(prefix):]).parts[:1] and
                   nnunet.FOLD_PATTERN.match(PurePosixPath(m[len(prefix):]).parts[0])
                   for m in members if m.startswith(prefix) and m != name):
                return nnunet.FORMAT, prefix
    return None


def is_importable(path: str | os.PathLike) -> bool:
    """A MONAI bundle or nnU-Net folder, or a zip of one (cheap checks, nothing loaded)."""
    path = Path(path)
    if path.is_dir():
        return monai_bundle.is_monai_bundle(path) or nnunet.is_nnunet_folder(path)
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return _zip_root(z.namelist()) is not None
    except (OSError, zipfile.BadZipFile):
        return False


def _fields_from_folder(root: Path, fold: str | None) -> dict:
    if monai_bundle.is_monai_bundle(root):
        return monai_bundle.read_monai_bundle(root)
    if nnunet.is_nnunet_folder(root):
        return nnunet.read_nnunet_folder(root, fold)
    raise ModelError("is a folder but neither a MONAI bundle (configs/metadata.json) nor an "
                     "nnU-Net v2 result folder (plans.json + fold_*/)", root)


def _fields_from_zip(archive: Path, fold: str | None) -> dict:
    members = zip_members(archive)
    found = _zip_root(members)
    if found is None:
        raise ModelError("is a zip but holds neither a MONAI bundle nor an nnU-Net result "
                         "folder", archive)
    fmt, prefix = found
    if fmt == monai_bundle.FORMAT:
        wanted = [prefix + f for f in monai_bundle.FILES]
    else:
        wanted = [prefix + nnunet.PLANS, prefix + nnunet.DATASET]
        wanted += [m for m in members if m.startswith(prefix)
                   and PurePosixPath(m).name in nnunet.CHECKPOINTS]
    wanted = [m for m in wanted if m in members]
    with extracted(archive, wanted) as folder:
        fields = _fields_from_folder(folder / prefix, fold)
    fields["imported"]["source"] = str(archive)
    return fields


def import_model(path: str | os.PathLike, fold: str | None = None) -> ModelBundle:
    """A validated 3D bundle from a MONAI bundle or nnU-Net v2 folder (or a zip of one).

    ``fold``: which nnU-Net fold to take (default the lowest numbered). Every refusal is one
    ModelError line naming the file, the key and why."""
    path = Path(path)
    if not path.exists():
        raise ModelError("model folder or file not found", path)
    fields = _fields_from_zip(path, fold) if path.is_file() else _fields_from_folder(path, fold)
    window = fields["window"]
    roi_grid = [0, 0, 0]
    for net_axis, grid_axis in enumerate(window["axes"]):
        roi_grid[grid_axis] = window["roi_size"][net_axis]
    provenance = {"parent": str(path), "method": f"import ({fields['imported']['format']})",
                  "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "package_version": __version__}
    bundle = ModelBundle(**fields, in_plane_shape=roi_grid[:2], orientation="RAS",
                         slice_axis=2, dims=3, provenance=provenance, source=str(path))
    validate(bundle, path)
    return bundle
