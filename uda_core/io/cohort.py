"""A cohort's inputs: files, folders (searched recursively), globs and list files expanded
into one ordered list of volumes, and that list split into parts for parallel jobs.

Rules (`expand_inputs`):
- a volume file (.nii.gz, .nii, .mgz, .mha, .mhd, .nrrd, .nhdr) is one input;
- a folder is searched recursively (its files, then its subfolders, each in name order):
  every volume file in it is an input, and
  every folder that holds DICOM files (``*.dcm`` or files with the ``DICM`` marker) is one
  input (its series); label maps (``<prefix>_labels.*``, see uda_core.io.files) and
  anything under the folders in `exclude` (the output folder) are left out;
- a path that does not exist but holds ``*``, ``?`` or ``[`` is a glob (``**`` recurses);
  each match but label maps is expanded by these rules, in sorted order;
- a ``.csv``, ``.txt`` or ``.list`` file is a list: one input per line (``#`` comments and
  blank lines skipped), or for CSV the column named file, path or input (else the first);
  relative entries are relative to the list file's folder; entries are expanded by these
  rules.
The same input reached twice is kept once (first place). Errors name the entry: a path that
does not exist, a glob or folder that finds nothing.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from uda_core.errors import InputError, UdaError
from uda_core.io.readers import volume_suffix
from uda_core.io.writers import output_stem

LIST_SUFFIXES = (".csv", ".txt", ".list")
_LIST_COLUMNS = ("file", "path", "input")
_GLOB_CHARS = frozenset("*?[")
_LABEL_TAG = "_labels"   # uda_core.io.files.LABEL_TAG (files imports readers; keep io flat)


def is_dicom_file(path: Path) -> bool:
    """A ``.dcm`` file, or a file with the DICOM marker ``DICM`` at byte 128."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _is_list_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in LIST_SUFFIXES


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _search_folder(folder: Path, exclude: Sequence[Path]) -> list[Path]:
    """Volume files and DICOM-series folders under `folder`, in name order."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not _under((here / d).resolve(), exclude))
        names = sorted(n for n in files if not n.startswith("."))  # not temporaries
        volumes = [here / n for n in names if volume_suffix(here / n) is not None
                   and not output_stem(here / n).endswith(_LABEL_TAG)]
        found.extend(volumes)
        if any(is_dicom_file(here / n) for n in names if volume_suffix(here / n) is None):
            found.append(here)
    return found


def _read_list(path: Path) -> list[str]:
    """The entries of a list file, relative ones joined to its folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read as a list of inputs ({exc})", path) from exc
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
        column = 0
        if rows:
            header = [c.strip().lower() for c in rows[0]]
            named = [i for i, name in enumerate(header) if name in _LIST_COLUMNS]
            if named:
                column, rows = named[0], rows[1:]
        entries = [r[column].strip() for r in rows if len(r) > column and r[column].strip()]
    else:
        entries = [line.strip() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    return [e if Path(e).is_absolute() else str(path.parent / e) for e in entries]


def _expand_one(entry: str, exclude: Sequence[Path], depth: int) -> list[Path]:
    path = Path(entry)
    if path.is_dir():
        if any(is_dicom_file(p) for p in path.iterdir() if p.is_file()
               and volume_suffix(p) is None):
            return [path, *(p for p in _search_folder(path, exclude) if p != path)]
        found = _search_folder(path, exclude)
        if not found:
            raise InputError("holds no volumes or DICOM series (searched recursively)", path)
        return found
    if _is_list_file(path):
        if depth > 4:
            raise InputError("lists nest too deep (a list naming itself?)", path)
        listed: list[Path] = []
        for item in _read_list(path):
            listed.extend(_expand_one(item, exclude, depth + 1))
        return listed
    if path.exists():
        return [path]
    if _GLOB_CHARS & set(entry):
        matches = sorted(glob.glob(entry, recursive=True))
        if not matches:
            raise InputError("matches no file", path)
        expanded: list[Path] = []
        for match in matches:
            if Path(match).is_dir() or (volume_suffix(Path(match)) is not None
                                        and not output_stem(match).endswith(_LABEL_TAG)):
                expanded.extend(_expand_one(match, exclude, depth + 1))
        if not expanded:
            raise InputError("matches no volume file or folder", path)
        return expanded
    raise InputError("does not exist", path)


def expand_inputs(entries: Iterable[str | os.PathLike],
                  exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The cohort's volumes (files and DICOM-series folders) from `entries`, by the module's
    rules, in a fixed order: entries in the order given, each folder in name order."""
    excluded = [Path(e).resolve() for e in exclude]
    seen: set[Path] = set()
    inputs: list[Path] = []
    for entry in entries:
        for path in _expand_one(str(entry), excluded, 0):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                inputs.append(path)
    return inputs


def shard(inputs: Sequence[Path], num_parts: int, part_id: int) -> list[Path]:
    """Part `part_id` (0-based) of `num_parts`: every num_parts-th input from position
    part_id, as nnU-Net's -num_parts/-part_id. Across all parts each input is in exactly one,
    provided every part is given the same inputs (the expansion is deterministic)."""
    if num_parts < 1:
        raise UdaError(f"--num-parts must be at least 1, not {num_parts}")
    if not 0 <= part_id < num_parts:
        raise UdaError(f"--part-id must be between 0 and {num_parts - 1} (--num-parts "
                       f"{num_parts}), not {part_id}")
    return list(inputs[part_id::num_parts])
