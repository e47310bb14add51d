"""Reading the files of a model folder or zip from a stranger, safely.

Folder: every file read must lie inside the folder once symlinks are resolved. Zip: only the
members asked for are extracted, into a fresh temporary folder; a member whose name is
absolute or climbs out with ``..``, a symlink member, more than :data:`MAX_MEMBERS` members, or
a member that inflates past :data:`MAX_BYTES` or more than :data:`MAX_RATIO` times its
compressed size (a decompression bomb) is refused in one line, before anything is written.
JSON files are parsed with :func:`json.loads` only (no YAML, no expressions evaluated).
"""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from uda_core.errors import ModelError

MAX_MEMBERS = 10_000
MAX_BYTES = 4 * 2**30            # one extracted file, and all of them together
MAX_RATIO = 200                  # uncompressed / compressed size of a member over 1 MiB
MAX_JSON_BYTES = 64 * 2**20


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` when it exists inside ``root`` (symlinks resolved), else
    ModelError; FileNotFoundError when it does not exist."""
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(path)
    real, base = path.resolve(), root.resolve()
    if not real.is_relative_to(base):
        raise ModelError(f"{relative} points outside the model folder (to {real}); refused",
                         root)
    return path


def read_json(root: Path, relative: str) -> dict:
    """A JSON object file inside ``root`` (ModelError when missing, too large or not JSON)."""
    try:
        path = inside(root, relative)
    except FileNotFoundError:
        raise ModelError(f"{relative} is missing", root) from None
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ModelError(f"{relative} is larger than {MAX_JSON_BYTES >> 20} MiB; refused", root)
    try:
        content: Any = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{relative} is not valid JSON ({exc})", root) from exc
    if not isinstance(content, dict):
        raise ModelError(f"{relative} is not a JSON object", root)
    return content


def _check_member(info: zipfile.ZipInfo, archive: Path) -> None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ModelError(f"member {name!r} has an absolute or '..' path; refused", archive)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ModelError(f"member {name!r} is a symbolic link; refused", archive)
    if info.file_size > MAX_BYTES or (info.file_size > 2**20 and info.file_size
                                      > MAX_RATIO * max(info.compress_size, 1)):
        raise ModelError(f"member {name!r} would inflate to {info.file_size} bytes from "
                         f"{info.compress_size} (a decompression bomb?); refused", archive)


def zip_members(archive: Path) -> list[str]:
    """Names of a zip's members, after checking every member (see the module doc)."""
    try:
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ModelError(f"has {len(infos)} members (more than {MAX_MEMBERS}); refused",
                                 archive)
            for info in infos:
                _check_member(info, archive)
            if sum(i.file_size for i in infos) > MAX_BYTES:
                raise ModelError(f"would inflate to more than {MAX_BYTES >> 30} GiB; refused",
                                 archive)
            return [i.filename for i in infos]
    except zipfile.BadZipFile as exc:
        raise ModelError(f"is not a readable zip file ({exc})", archive) from exc


@contextmanager
def extracted(archive: Path, names: list[str]) -> Iterator[Path]:
    """The checked members ``names`` extracted into a temporary folder, removed afterwards.
    Copies at most the declared size of each member."""
    zip_members(archive)
    out = Path(tempfile.mkdtemp(prefix="uda-import-"))
    try:
        _extract(archive, names, out)
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _extract(archive: Path, names: list[str], out: Path) -> None:
    with zipfile.ZipFile(archive) as z:
        for name in names:
            info = z.getinfo(name)
            target = out / PurePosixPath(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as dst:
                left = info.file_size
                while block := src.read(min(1 << 20, left + 1)):
                    left -= len(block)
                    if left < 0:
                        raise ModelError(f"member {name!r} inflates past its declared size; "
                                         "refused", archive)
                    dst.write(block)
