"""One writer per output folder: a run holds a lock on the folder while it writes there.

The lock is an advisory ``flock`` on the folder itself (no file is added to it), which the
operating system releases when the process ends, however it ends: a killed run never leaves
the folder locked. A second run that finds the folder held is refused at once with one line
naming the folder. (On systems without ``fcntl`` no lock is taken.)

Once held, the folder is the holder's alone, so the hidden temporaries that a killed writer
left in it (and in its subfolders: checkpoints/, masks/) are removed
(io.atomic.remove_stale_temporaries): after a kill only complete files remain.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from uda_core.errors import UdaError
from uda_core.io.atomic import check_writable, output_error, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold `folder` (created if missing) for writing while inside; UdaError when another
    live process (or another holder in this one) holds it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (output_error(exc, folder) or exc) from exc
    check_writable(folder)
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
            remove_stale_temporaries(folder)
            yield folder
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
