"""The panel's layout and words in a real napari window of a laptop's size (1280 x 800).

Fits without horizontal scrolling, Adapt in view without scrolling, advanced settings folded
with no blank space for the largest form, the status line up to date, plain words on the model
card and the method list, the curves dock shown from a run's start.
"""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import QApplication

from app.segmentation.panel import UdaPanel
from tests.conftest import blob_volume, write_nifti

pytestmark = pytest.mark.gui
WINDOW = (1280, 800)


@pytest.fixture
def studio(make_napari_viewer, qtbot):
    """A shown 1280 x 800 napari window with the panel docked on the right, as uda-studio."""
    viewer = make_napari_viewer(show=True)
    panel = UdaPanel(viewer)
    viewer.window.add_dock_widget(panel, name="UDA Studio", area="right")
    panel.confirm = lambda title, text: True
    viewer.window._qt_window.resize(*WINDOW)
    yield viewer, panel
    if panel.controller.is_running:
        panel.controller.stop()
        panel.controller.wait(60_000)


def settle(qtbot) -> None:
    QApplication.processEvents()
    qtbot.wait(50)


def load_demo(panel, qtbot, domain="t2"):
    with qtbot.waitSignal(panel.data_box.loaded, timeout=120_000):
        panel.load_demo(domain)
    qtbot.waitUntil(lambda: not panel.data_box.busy, timeout=120_000)
    settle(qtbot)


def visible_in_panel(panel, widget) -> bool:
    """Whether `widget` lies wholly inside the panel's visible area (no scrolling needed)."""
    top_left = widget.mapTo(panel, QPoint(0, 0))
    return (widget.isVisible() and top_left.y() >= 0 and top_left.x() >= 0
            and top_left.y() + widget.height() <= panel.height()
            and top_left.x() + widget.width() <= panel.width())


def test_the_panel_fits_a_laptop_window_without_horizontal_scrolling(studio, qtbot):
    viewer, panel = studio
    window = viewer.window._qt_window
    assert panel.run_box.status.text().startswith("Choose a model")
    load_demo(panel, qtbot)
    assert window.width() <= WINDOW[0] and window.height() <= WINDOW[1]
    hint = panel.sizeHint()
    assert hint.width() <= WINDOW[0] // 3 and hint.height() <= WINDOW[1]
    assert panel.minimumSizeHint().width() <= WINDOW[0] // 3
    bar = panel.scroll.horizontalScrollBar()
    content, viewport = panel.scroll.widget(), panel.scroll.viewport()

    def fits() -> bool:   # nothing would need a horizontal scroll bar, nothing is clipped
        return (bar.maximum() == 0 and not bar.isVisible()
                and content.minimumSizeHint().width() <= viewport.width()
                and content.width() <= viewport.width())
    assert fits()                                               # once a model is loaded
    assert panel.width() <= WINDOW[0] // 2
    # model, scans and Adapt in view at once; advanced settings folded
    assert visible_in_panel(panel, panel.run_box.start)
    assert panel.run_box.start.text() == "Adapt"
    assert visible_in_panel(panel, panel.run_box.progress)
    assert visible_in_panel(panel, panel.run_box.status)
    assert not panel.method_box.advanced.is_open
    # the status line follows what is loaded, never "Load a model" once one is
    assert "model" not in panel.run_box.status.text().lower()
    assert panel.run_box.status.text() == "Ready: press Adapt."
    # opening every section still gives no horizontal scroll bar
    panel.method_box.advanced.set_open(True)
    panel.more_inputs.set_open(True)
    panel.model_box.details.set_open(True)
    settle(qtbot)
    assert fits()
    assert visible_in_panel(panel, panel.run_box.start)         # the action bar stays put


def test_folded_settings_leave_no_gap_and_only_the_chosen_form_is_laid_out(studio, qtbot):
    _, panel = studio
    load_demo(panel, qtbot)
    box = panel.method_box
    folded = box.sizeHint().height()
    box.advanced.set_open(True)
    settle(qtbot)
    heights = {}
    for name in ("adabn", "sfda"):
        box.select(name)
        settle(qtbot)
        shown = [n for n, form in box._form_for.items() if form.isVisible()]
        assert shown == [name]
        heights[name] = box.forms.sizeHint().height()
    assert heights["adabn"] < heights["sfda"] / 2     # adabn has one setting, sfda eleven
    box.select("ddm")                                   # as before: the same lines shown
    box.advanced.set_open(False)
    settle(qtbot)
    assert box.sizeHint().height() <= folded + 2


def test_plain_words_on_the_model_card_the_methods_and_the_inputs(studio, qtbot):
    _, panel = studio
    load_demo(panel, qtbot)
    card = panel.model_box.card.text()
    for technical in ("unet2d", "in_channels", "percentile_zscore", "axis 2", "RAS"):
        assert technical not in card
    assert "grey matter" in card and "T1-weighted" in card
    assert "unet2d" in panel.model_box.details_text.text()   # behind the disclosure
    assert not panel.model_box.details.is_open
    box = panel.method_box
    texts = {box.model.item(r).data(0x0100): box.model.item(r).text()
             for r in range(box.model.rowCount())}
    assert texts["ddm"] == "ddm (recommended)"             # the demo gives paired T1 scans
    assert texts["sfda"] == "sfda"
    box.select("ddm")
    assert "T1-weighted scan per subject" in box.summary.text()
    assert "Pichler" in box.summary.toolTip()               # the paper stays in the tooltip
    assert not panel.data_box.reference.add_folder_button.isVisibleTo(panel.data_box.reference)
    assert panel.data_box.targets.add_folder_button.isVisibleTo(panel.data_box.targets)
    assert "3 paired" in panel.more_inputs.header.text()


def test_a_run_shows_the_curves_dock_at_a_quarter_of_the_height(studio, qtbot, tmp_path,
                                                                  tiny_bundle_path):
    viewer, panel = studio
    dock = panel._curves_dock
    assert not dock.isVisible()                              # nothing to draw yet
    panel.model_box.load(tiny_bundle_path)
    with qtbot.waitSignal(panel.data_box.loaded, timeout=60_000):
        panel.data_box.targets.set_paths([write_nifti(tmp_path / "scan.nii.gz",
                                                      blob_volume())])
    panel.method_box.select("tent")
    panel.method_box.set_steps(2)
    panel.run_box.out_dir.setText(str(tmp_path / "run"))
    with qtbot.waitSignal(panel.controller.running_changed, timeout=10_000):
        assert panel.start()
    assert dock.isVisible()                                  # from the start
    qtbot.waitUntil(lambda: panel.summary is not None, timeout=600_000)
    settle(qtbot)
    assert dock.isVisible()                                  # and after the run
    assert dock.height() <= viewer.window._qt_window.height() * 0.35
    # the layer list and the panel keep their height: the curves sit under the canvas only
    assert dock.width() < viewer.window._qt_window.width() * 0.7
    assert panel.height() > viewer.window._qt_window.height() * 0.6
    assert panel.summary["threads"] >= 1


def test_the_registration_tab_hides_the_adaptation_curves(qtbot):
    """uda-studio's window: the curves dock belongs to the adaptation tab; the registration
    tab in front hides it, the adaptation tab brings it back."""
    from app.main import build_parser, open_studio

    viewer, panel = open_studio(build_parser().parse_args(["--window-size", "1280x800"]))
    try:
        settle(qtbot)
        assert not panel._curves_dock.isVisible()           # no run yet
        panel.show_curves()
        qtbot.waitUntil(panel._curves_dock.isVisible, timeout=5_000)
        panel.registration_dock.raise_()
        qtbot.waitUntil(lambda: not panel._curves_dock.isVisible(), timeout=5_000)
        panel.dock.raise_()
        qtbot.waitUntil(panel._curves_dock.isVisible, timeout=5_000)
        note = viewer.canvas.overlays.text
        assert note.visible and "Radiological" in note.text
    finally:
        viewer.close()


def test_the_registration_tab_fits_the_window_without_cutting_its_right_edge(qtbot):
    """uda-studio at 1280 x 800 with the registration tab in front: its content is no wider
    than what the dock shows (it measured narrower before the window's style applied)."""
    from app.main import build_parser, open_studio

    viewer, panel = open_studio(build_parser().parse_args(["--window-size", "1280x800"]))
    try:
        panel.registration_dock.raise_()
        settle(qtbot)
        registration = panel.registration
        content, viewport = registration.scroll.widget(), registration.scroll.viewport()
        qtbot.waitUntil(lambda: content.minimumSizeHint().width() <= viewport.width(),
                        timeout=5_000)
        assert content.width() <= viewport.width()
        assert visible_in_panel(registration, registration.save_button)
        assert registration.width() <= WINDOW[0] // 3
    finally:
        viewer.close()
