"""uda_core must import and work with no Qt, qtpy, napari or pyqtgraph."""

import subprocess
import sys

CHECK = r"""
import importlib, pkgutil, sys
import uda_core
for info in pkgutil.walk_packages(uda_core.__path__, "uda_core."):
    importlib.import_module(info.name)
gui = sorted(m for m in sys.modules
             if m.split(".")[0] in {"PySide6", "PyQt5", "PyQt6", "PySide2", "qtpy", "napari",
                                    "pyqtgraph", "vispy", "magicgui", "superqt"})
print("GUI:" + ",".join(gui))
"""


def test_every_uda_core_module_imports_without_gui_packages():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "GUI:", result.stdout
