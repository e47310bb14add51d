"""app._singleton_refs: PySide6 6.12 drops a reference to True per Python-side emit() and one
to None per Python callable a C++-emitted signal calls; importing the app must make both
harmless on Python < 3.12 (see the module's docstring)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from app import _singleton_refs

REPO = Path(__file__).resolve().parents[2]

# 100,000 of each: far beyond the few thousand references None and True hold in a bare
# interpreter, so an unguarded affected PySide6 aborts ("bool_dealloc" / "none_dealloc")
EMISSIONS = textwrap.dedent("""
    from PySide6.QtCore import QObject, Signal

    class Source(QObject):
        ping = Signal()

    source = Source()
    for _ in range(100_000):        # Python-side emit(): its returned True
        source.ping.emit()

    def on_renamed(name):
        pass

    source.objectNameChanged.connect(on_renamed)
    for i in range(100_000):        # C++-side emit calling a Python callable: None
        source.setObjectName(str(i))
    print("clean")
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})


def test_signals_emitted_after_importing_the_app_never_free_none_or_true():
    result = _run("import app\n" + EMISSIONS)
    assert (result.returncode, result.stdout.strip()) == (0, "clean"), result.stderr[-2000:]


def test_the_guard_is_added_once_and_only_where_objects_are_not_immortal():
    before = [sys.getrefcount(obj) for obj in (None, True, False)]
    _singleton_refs.guard()   # already done when `app` was imported: adds nothing
    after = [sys.getrefcount(obj) for obj in (None, True, False)]
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) < 1000   # churn only
    if _singleton_refs.needed():
        assert min(after) > _singleton_refs.EXTRA_REFERENCES
    else:   # Python 3.12+: immortal, left as they are
        assert max(after) < _singleton_refs.EXTRA_REFERENCES
