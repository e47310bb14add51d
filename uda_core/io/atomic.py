"""Atomic file output: write to a temporary file in the same folder, then move it into place.

A crash or an error never leaves a half-written file at the destination (nor replaces a good
one), and the new file gets the permissions of any normally created file (0o666 & ~umask),
not the 0600 of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path


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
    at the move. On any error the temporary file is removed and `path` is left as it was.
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
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        os.chmod(temporary, NEW_FILE_MODE)
        if overwrite:
            os.replace(temporary, path)
            return
        try:
            os.link(temporary, path)  # atomic, and fails if `path` exists (no race)
        except FileExistsError:
            raise refuse() from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(path):
                raise refuse() from None
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
