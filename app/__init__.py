"""UDA Studio's desktop app and napari plugin: Qt widgets, one threading mechanism, plots, layers.

Thin by design: every number shown comes from :mod:`uda_core`; nothing here does science.

Layout:

- the plugin's contributions, at the top: ``napari.yaml`` (the npe2 manifest naming them),
  :mod:`app.main` (the `uda-studio` desktop app), :mod:`app._reader` (the volume reader),
  :mod:`app._sample_data` (the demo samples), and :mod:`app.layers` (volumes as napari layer
  data in one (S, P, L) mm world, used by all of them);
- :mod:`app.worker`: the one threading mechanism (a callable on its own ``QThread``, results
  on the GUI thread; the adaptation run's controller with stop/pause), used by both panels;
- :mod:`app.segmentation`: the adaptation panel (`uda-studio.panel`) and its boxes;
- :mod:`app.registration`: the registration panel (`uda-studio.registration`), its run and
  its layers;
- :mod:`app.widgets`: widgets both panels use (settings forms, live curves, file lists).
"""

from ._singleton_refs import guard as _guard_singleton_refs

_guard_singleton_refs()   # before any Qt signal is emitted: see app/_singleton_refs.py
