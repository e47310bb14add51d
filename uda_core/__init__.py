"""UDA Studio core: everything that is not Qt.

Volumes in, masks out; adaptation methods; registration; the demo data generator.
Importable and usable with no display, no Qt and no napari.
"""

__version__ = "0.1.0"
