"""One writer per output folder: a run holds a lock on the folder while it writes there.

The lock is an advisory ``flock`` on the folder itself (no file is added to it), which the
operating system releases when the process ends, however it ends: a killed run never leaves
the folder locked. A second run that finds the folder held is refused at once with one line
naming the folder. (On systems without ``fcntl`` no lock is taken.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from uda_core.errors import UdaError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold `folder` (created if missing) for writing while inside; UdaError when another
    live process (or another holder in this one) holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield folder
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UdaError(f"{folder}: another UDA Studio run is writing into this folder; "
                           "wait for it to finish or choose another --out") from None
        try:
            yield folder
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
