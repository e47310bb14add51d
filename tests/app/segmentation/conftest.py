"""Shared fixtures of the panel tests: run speeds recorded in the test's own folder, not in
the user's home, and the docked panel."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _speeds_in_tmp(tmp_path, monkeypatch):
    from app.segmentation import run_box
    monkeypatch.setattr(run_box, "SPEEDS_FILE", tmp_path / "speeds.json")


@pytest.fixture
def panel(make_napari_viewer, qtbot):
    """A UdaPanel docked in a fresh napari viewer, answering yes to every question. Runs use
    one torch thread (busy 2-core test machines: OpenMP threads stall each other). At the
    end a run still going is stopped and waited for, and so are file reads, so that no late
    callback reaches a closed viewer."""
    import torch

    from app.segmentation.panel import UdaPanel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    viewer = make_napari_viewer()
    widget = UdaPanel(viewer)
    viewer.window.add_dock_widget(widget, name="UDA Studio", area="right")
    widget.confirm = lambda title, text: True
    yield widget
    if widget.controller.is_running:
        widget.controller.stop()
        widget.controller.wait(60_000)
    qtbot.waitUntil(lambda: not widget.data_box.busy, timeout=60_000)
    torch.set_num_threads(threads)
