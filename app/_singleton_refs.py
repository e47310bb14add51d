"""Keeps None, True and False alive under PySide6 releases that drop references to them.

The defect (PySide6 6.12.0, in libpyside's C code; measured with ``sys.getrefcount`` on
Python 3.11): every ``SignalInstance.emit()`` called from Python drops one reference to
``True`` (its return value); every call of a Python callable from a signal that C++ emits
(``QTimer.timeout``, ``QTimer.singleShot``, ``objectNameChanged``: PySide's dynamic slots)
drops one reference to ``None``, whatever the callable returns; a ``disconnect()`` that fails
drops one to ``False``. No other object loses references. PySide6 6.9.3, 6.10.0, 6.10.3 and
6.11.3 drop none (the pin below 6.10 that this replaces was wider than the defect).

On Python 3.12 and later these three objects are immortal (PEP 683: their reference count is
pinned and never reaches zero), so the defect is harmless there. On Python 3.10 and 3.11 the
count falls by one per emission until it reaches zero and the interpreter aborts with "Fatal
Python error: none_dealloc" (or "bool_dealloc"): after a few hundred emissions in a bare
script, a few minutes into the GUI tests. Our code cannot emit a signal without ``emit()``,
and napari, pyqtgraph and superqt emit too, so no change of our connection patterns avoids
it. A standalone reproducer (aborts inside the loop on PySide6 6.12.0 and Python 3.11)::

    from PySide6.QtCore import QObject, Signal
    class Source(QObject):
        ping = Signal()
    source = Source()
    for _ in range(100_000):
        source.ping.emit()

:func:`guard` does on Python < 3.12 what Python 3.12 does: it adds a large constant to the
reference counts of the three objects, so that no realistic number of dropped references
brings them to zero (2**40 of them: 10,000 emissions a second for three years). Nothing else
changes but what ``sys.getrefcount`` reports for them. ``app/__init__.py`` calls it, so it
runs before any of our code (the desktop app, or the napari plugin's first contribution)
emits. tests/app/test_singleton_refs.py emits both ways 100,000 times in a fresh interpreter
after importing the app and expects a clean exit.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys

EXTRA_REFERENCES = 1 << 40


def needed() -> bool:
    """True where the guard applies: CPython before 3.12 (no immortal objects), a build whose
    objects start with their reference count (not a Py_TRACE_REFS debug build), PySide6
    installed (whichever version: harmless where not needed, and a list of the affected
    releases would age)."""
    return (sys.implementation.name == "cpython" and sys.version_info < (3, 12)
            and not hasattr(sys, "getobjects")
            and importlib.util.find_spec("PySide6") is not None)


def guard() -> None:
    """Add :data:`EXTRA_REFERENCES` to the reference counts of None, True and False, once
    (a second call, e.g. from the package imported under both its names, adds nothing)."""
    if not needed():
        return
    for obj in (None, True, False):
        count = ctypes.c_ssize_t.from_address(id(obj))   # PyObject.ob_refcnt, at offset 0
        if count.value < EXTRA_REFERENCES:
            count.value += EXTRA_REFERENCES
