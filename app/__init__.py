"""UDA Studio's desktop app and napari plugin: Qt widgets, the worker thread, plots, layers.

Thin by design: every number shown comes from :mod:`uda_core`; nothing here does science.
"""
