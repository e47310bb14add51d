"""Atomic file output: write to a temporary file in the same folder, then move it into place.

A crash or an error never leaves a half-written file at the destination (nor replaces a good
one), and the new file gets the permissions of any normally created file (0o666 & ~umask),
not the 0600 of ``tempfile.mkstemp``. As in SQLite and PostgreSQL, the file is fsynced before
the rename and its folder after it, so that a power cut cannot leave the new name pointing at
unwritten blocks. A process killed mid-write leaves only its hidden temporary
(``.NAME.<12 hex>.tmp<suffix>``), which :func:`remove_stale_temporaries` clears (the folder
lock does so when a run takes the folder). A full disk or a read-only folder becomes one
:class:`OutputError` line naming the folder (:func:`output_error`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from uda_core.errors import OutputError


def _read_umask() -> int:
    """The process umask, read once at import (from /proc where it can be, without touching it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no way to read it without setting it: restore at once
    os.umask(old)
    return old


NEW_FILE_MODE = 0o666 & ~_read_umask()
TEMPORARY_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\.[^/]*)?$")

#: errno -> the words of the one-line error
_OUTPUT_ERRNOS = {errno.ENOSPC: "no space left on the device",
                  errno.EDQUOT: "no space left (disk quota exceeded)",
                  errno.EROFS: "is read-only (a read-only file system)",
                  errno.EACCES: "is not writable (permission denied)",
                  errno.EPERM: "is not writable (operation not permitted)"}


def output_error(exc: BaseException, path: str | os.PathLike,
                 written: int = 0) -> OutputError | None:
    """The one-line error for a failed write of `path` (a file or folder), or None when `exc`
    is not about the place (full, read-only, not writable).

    torch.save reports a full disk as a RuntimeError without errno ("unexpected pos ..."); it
    counts as "no space" when the folder has less free than `written` bytes (what the failed
    write had put down so far) or under 1 MiB."""
    folder = existing = Path(path)
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    code = getattr(exc, "errno", None)
    if code in _OUTPUT_ERRNOS:
        words = _OUTPUT_ERRNOS[code]
    elif isinstance(exc, RuntimeError) and _nearly_full(existing, written):
        words = _OUTPUT_ERRNOS[errno.ENOSPC]
    else:
        return None
    if not words.startswith("is"):
        words = f"cannot write there: {words}"
    return OutputError(words, folder)


def check_writable(path: str | os.PathLike) -> None:
    """OutputError (one line naming `path`) when `path`, or the nearest folder above it that
    exists, cannot take new files: a read-only file system or no write permission. For an
    early refusal, before any work; a full disk is only found by writing."""
    existing = Path(path)
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        code = errno.EROFS if read_only else errno.EACCES
        raise output_error(OSError(code, os.strerror(code)), path) or OSError(code, path)


def _nearly_full(folder: Path, written: int) -> bool:
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < max(1 << 20, written)


def _fsync(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Flush `path` (a file, or with `folder` a directory entry list) to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:
        if folder:
            return   # some systems cannot open folders; the file itself is synced
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if not folder or exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike, depth: int = 1) -> list[Path]:
    """Remove the temporaries that killed writers left in `folder` (and its subfolders down to
    `depth` levels); only names of :func:`atomic_output`'s pattern. Call it only while holding
    the folder (io.folder_lock), so that no live writer's temporary is taken. Returns them."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if depth > 0:
                removed += remove_stale_temporaries(entry.path, depth - 1)
        elif TEMPORARY_NAME.match(entry.name):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool,
                  exists_error: Callable[[Path], BaseException] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success, move it to `path`.

    The temporary file (hidden name, same suffix as `path` so that writers which look at the
    extension behave, e.g. ``.nii.gz``) already exists, empty, when the block starts; the block
    writes it. When the block ends without error the file gets mode ``NEW_FILE_MODE``
    (0o666 & ~umask) and is moved to `path`. Without `overwrite` an existing `path` is never
    replaced, even one that appears while the block runs (``os.link`` fails when the name is
    taken), and ``exists_error(path)`` is raised (default: FileExistsError), both on entry and
    at the move. On any error the temporary file is removed and `path` is left as it was; a
    full disk or read-only folder is raised as :class:`OutputError` (one line naming it).
    """
    path = Path(path)

    def refuse() -> BaseException:
        if exists_error is not None:
            return exists_error(path)
        return FileExistsError(f"{path} already exists")

    if not overwrite and os.path.lexists(path):
        raise refuse()
    suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() == ".gz" else path.suffix
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise (output_error(exc, path.parent) or exc) from exc
    try:
        try:
            yield temporary
            os.chmod(temporary, NEW_FILE_MODE)
            _fsync(temporary)
        except (OSError, RuntimeError) as exc:
            try:   # before the temporary frees the space
                written = os.path.getsize(temporary)
            except OSError:
                written = 0
            place = output_error(exc, path.parent, written)
            if place is None:
                raise
            raise place from exc
        if overwrite:
            os.replace(temporary, path)
        else:
            _link_or_refuse(temporary, path, refuse)
        _fsync(path.parent, folder=True)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _link_or_refuse(temporary: Path, path: Path, refuse: Callable[[], BaseException]) -> None:
    try:
        os.link(temporary, path)  # atomic, and fails if `path` exists (no race)
    except FileExistsError:
        raise refuse() from None
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise refuse() from None
        os.replace(temporary, path)
