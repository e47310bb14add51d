"""The app through 1,000 preview refreshes: the layer count stays at what step 0 made and the
resident set grows under 5 % from refresh 100 to refresh 1,000 (tests/faults/app_previews.py;
the figure: scripts/long_run_app_previews.py -> BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from app.segmentation.panel import UdaPanel
from tests.faults.app_previews import drive_previews


@pytest.fixture
def panel(make_napari_viewer, qapp, tmp_path, monkeypatch):
    from app.segmentation import run_box
    monkeypatch.setattr(run_box, "SPEEDS_FILE", tmp_path / "speeds.json")
    viewer = make_napari_viewer(show=True)
    widget = UdaPanel(viewer)
    viewer.window.add_dock_widget(widget, name="UDA Studio", area="right")
    return widget


def test_a_few_previews_refresh_one_mask_layer(panel, qapp):
    memory = drive_previews(panel, qapp.processEvents, count=10)
    layers = {k: v[0] for k, v in memory.items()}
    assert layers == {1: 3, 10: 3}   # the image, "before" and "mask" layers
    names = [layer.name for layer in panel.viewer.layers]
    assert any(n.endswith("before sub-100_t2") for n in names)


@pytest.mark.slow
def test_1000_previews_keep_layers_and_memory_flat(panel, qapp):
    memory = drive_previews(panel, qapp.processEvents, count=1000)
    assert {v[0] for v in memory.values()} == {3}, memory
    assert memory[1000][1] / memory[100][1] - 1 < 0.05, memory
