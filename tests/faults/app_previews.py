"""The segmentation panel through many preview refreshes, with its layer count and the
process's memory sampled.

One demo target (resources/demo/t2, sub-100: 90 x 108 x 90 voxels at 2 mm) is shown as the
panel shows it, a run is begun on it, and then PreviewEvents arrive through the run
controller's ``previewed`` signal as a run sends them (app/worker.py; every 25 steps in the
app), each with a new (X, Y, Z) uint8 mask on the target's grid (the demo's labels, shifted
by a few voxels, so every refresh changes the displayed layer). The event loop runs after
each, so the viewer redraws. Step 0 adds the "before" and "mask" layers; every later preview
replaces the mask layer's data. Sampled: len(viewer.layers) and the resident set size (MiB).
Used by tests/faults/test_app_previews.py and scripts/long_run_app_previews.py.
"""

from __future__ import annotations

import numpy as np

from tests.faults.long_run import GUI_PREVIEW_EVERY, rss_mib

SAMPLES = (1, 10, 100, 250, 500, 750, 1000)


def drive_previews(panel, process_events, count: int = 1000,
                   samples=SAMPLES) -> dict[int, tuple[int, float]]:
    """Refresh `panel`'s preview `count` times after the step-0 preview; returns
    {refresh: (layer count, RSS MiB)} at each of `samples` not above `count`.
    process_events(): runs the Qt event loop once (QApplication.processEvents)."""
    from uda_core.engine.events import PreviewEvent
    from uda_core.io.readers import read_labels, read_volume
    from uda_core.synth.demo_files import demo_set

    demo = demo_set("t2")
    path = demo.targets[0]
    panel.layers.show_target(path, read_volume(path))
    base = np.asarray(read_labels(demo.reference[0]).data, dtype=np.uint8)
    panel.layers.begin_run("tent", [path])
    model_grid = np.zeros((1, 1, 1), np.uint8)   # the panel shows input_labels only
    memory: dict[int, tuple[int, float]] = {}
    for refresh in range(count + 1):   # 0: the "before" preview
        labels = np.roll(base, refresh % 5, axis=0)   # a new array, as each event brings
        panel.controller.previewed.emit(PreviewEvent(
            step=refresh * GUI_PREVIEW_EVERY, volume_index=0, labels=model_grid,
            input_labels=labels))
        process_events()
        if refresh in samples:
            memory[refresh] = (len(panel.viewer.layers), rss_mib())
    shown = panel.layers.mask_data(0)
    assert shown is not None and shown.any(), "the mask layer was not refreshed"
    return memory
