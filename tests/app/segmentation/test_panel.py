"""The UDA Studio panel in a real napari viewer (under the virtual X server pytest-xvfb starts).

End to end on the shipped demo: load, Start, curves receive points, masks change, Stop leaves a
usable checkpoint, exports are valid, errors become dialogs and the app stays alive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model
from uda_core.synth.demo_files import demo_set

RUN_TIMEOUT_MS = 240_000


def load_one_demo_subject(panel, qtbot, domain="t2"):
    demo = demo_set(domain)
    panel.model_box.load("demo:brain-t1")
    with qtbot.waitSignal(panel.data_box.loaded, timeout=60_000):
        panel.data_box.targets.set_paths(demo.targets[:1])
    panel.data_box.paired.set_paths(demo.paired[:1])
    with qtbot.waitSignal(panel.data_box.loaded, timeout=60_000):
        panel.data_box.reference.set_paths(demo.reference[:1])
    return demo


def animated_widgets(window) -> list[str]:
    """The visible widgets of the window that repaint by themselves: a label playing a movie
    (napari's "in progress" indicator, shown while a napari progress is open) or a busy
    progress bar. Under Xvfb every repaint of a window holding the OpenGL canvas is
    composited by Mesa's llvmpipe threads on the CPU cores the run trains on."""
    from qtpy.QtGui import QMovie
    from qtpy.QtWidgets import QLabel, QProgressBar
    found = [f"label {label.text()!r}" for label in window.findChildren(QLabel)
             if label.isVisibleTo(window) and label.movie() is not None
             and label.movie().state() == QMovie.Running]
    found += [f"busy bar {bar.objectName()!r}" for bar in window.findChildren(QProgressBar)
              if bar.isVisibleTo(window) and bar.minimum() == bar.maximum() == 0]
    return found


def close_dialogs(panel):
    box = getattr(panel, "_last_error_box", None)
    if box is not None:
        box.close()


def test_methods_missing_data_are_greyed_out_with_the_reason(panel, qtbot):
    panel.model_box.load("demo:brain-t1")
    assert not panel.start()                      # no targets yet
    assert "target" in panel.run_box.status.text()
    close_dialogs(panel)
    demo = demo_set("t2")
    with qtbot.waitSignal(panel.data_box.loaded, timeout=60_000):
        panel.data_box.targets.set_paths(demo.targets[:1])
    rows = {panel.method_box.model.item(r).text(): panel.method_box.model.item(r)
            for r in range(panel.method_box.model.rowCount())}
    assert rows["sfda"].isEnabled() and rows["tent"].isEnabled()
    assert not rows["ddm"].isEnabled() and not rows["adaptsegnet"].isEnabled()
    panel.method_box.select("ddm")
    assert "source-modality image" in panel.method_box.reason.text()
    assert not panel.start()
    close_dialogs(panel)
    panel.data_box.paired.set_paths(demo.paired[:1])
    assert rows["ddm"].isEnabled() and panel.method_box.reason.text() == ""
    # the target is shown with its physical size (2 mm voxels)
    layer = panel.viewer.layers["sub-100_t2"]
    extent = np.ptp(np.asarray(layer.extent.world), axis=0)
    assert np.allclose(sorted(extent), sorted(np.array(read_volume(demo.targets[0]).shape) * 2),
                       atol=2.1)


def test_demo_run_updates_curves_and_masks_and_exports_valid_files(panel, qtbot, tmp_path):
    demo = load_one_demo_subject(panel, qtbot)
    panel.method_box.select("ddm")
    panel.method_box.engine_form.set_values({"steps": 6, "score_every": 3, "select_by": "last",
                                             "preview_every": 3, "batch_size": 8,
                                             "collapse_guard": False})
    panel.run_box.out_dir.setText(str(tmp_path / "run"))
    previews, animated = [], []
    panel.controller.previewed.connect(lambda event: previews.append(event.step))

    def look_for_animations(event):
        animated.extend(animated_widgets(panel.viewer.window._qt_window))

    panel.controller.stepped.connect(look_for_animations)
    with qtbot.waitSignal(panel.controller.finished, timeout=RUN_TIMEOUT_MS):
        assert panel.start()
    panel.controller.stepped.disconnect(look_for_animations)   # no reference outlives it
    qtbot.waitUntil(lambda: not panel.data_box.busy, timeout=60_000)

    assert previews == [0, 3, 6]                                      # live mask refreshes
    assert animated == []                     # nothing repaints the window between steps
    series = panel.curves.series()
    assert any(len(points) == 6 for points in series.values())       # one loss per step
    assert any(key.lower().startswith("dice") or "reference" in key.lower()
               for key in series), series.keys()                      # reference Dice shown
    before = panel.layers.mask_data(0, before=True)   # (display order; compared as such)
    after = panel.layers.mask_data(0)
    assert before is not None and after is not None
    assert (before != after).sum() > 0                                # the mask changed
    assert panel.run_box.status.text().startswith("Adapted: kept step 6, the last good weights")

    summary = panel.summary
    assert summary["status"] == "completed" and summary["steps_done"] == 6
    load_model(summary["adapted_model"])                              # a valid bundle
    mask = read_labels(summary["masks"][0])
    target = read_volume(demo.targets[0])
    assert mask.shape == target.shape and np.allclose(mask.affine, target.affine)
    assert panel.save_box.model_button.isEnabled()


def test_stop_ends_the_run_and_leaves_a_usable_checkpoint(panel, qtbot, tmp_path):
    load_one_demo_subject(panel, qtbot)
    panel.method_box.select("tent")
    panel.method_box.engine_form.set_values({"steps": 500, "score_every": 50,
                                             "batch_size": 4})
    panel.run_box.out_dir.setText(str(tmp_path / "run"))
    panel.controller.stepped.connect(lambda event: event.step == 2 and panel.stop())
    with qtbot.waitSignal(panel.controller.finished, timeout=RUN_TIMEOUT_MS):
        assert panel.start()
    assert panel.summary["status"] == "cancelled"
    assert panel.summary["steps_done"] < 500
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    load_model(panel.summary["adapted_model"])
    assert panel.run_box.start.isEnabled()


def test_no_usable_target_becomes_a_dialog_and_the_app_stays_usable(panel, qtbot, tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    panel.model_box.load("demo:brain-t1")
    panel.data_box.targets.set_paths([broken])   # the reader fails in the background
    qtbot.waitUntil(lambda: not panel.data_box.busy, timeout=60_000)
    panel.method_box.select("tent")
    panel.run_box.out_dir.setText(str(tmp_path / "run"))
    assert not panel.start()
    assert "None of the target volumes can be used: broken.nii.gz" in \
        panel.run_box.status.text()
    assert panel._last_error_box.isVisible()
    close_dialogs(panel)
    assert panel.run_box.start.isEnabled() and not panel.controller.is_running


def test_a_failing_run_becomes_a_dialog_and_the_app_stays_usable(panel, qtbot, tmp_path):
    import shutil
    scan = Path(shutil.copy(demo_set("t2").targets[0], tmp_path / "scan.nii.gz"))
    panel.model_box.load("demo:brain-t1")
    with qtbot.waitSignal(panel.data_box.loaded, timeout=60_000):
        panel.data_box.targets.set_paths([scan])
    scan.unlink()                    # gone after it was checked: the run's own read fails
    panel.method_box.select("tent")
    panel.run_box.out_dir.setText(str(tmp_path / "run"))
    with qtbot.waitSignal(panel.controller.failed, timeout=RUN_TIMEOUT_MS):
        assert panel.start()
    assert "scan.nii.gz: does not exist" in panel.run_box.status.text()
    assert panel._last_error_box.isVisible()
    close_dialogs(panel)
    assert panel.run_box.start.isEnabled() and not panel.controller.is_running


def test_a_bad_model_file_names_the_file(panel, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 100)
    assert not panel.model_box.load(str(bad))
    assert "model.pt" in panel.run_box.status.text()
    close_dialogs(panel)


def test_closing_during_a_run_asks_then_stops_it_cleanly(panel, qtbot, tmp_path):
    load_one_demo_subject(panel, qtbot)
    panel.method_box.select("tent")
    panel.method_box.engine_form.set_values({"steps": 500, "score_every": 50, "batch_size": 4})
    panel.run_box.out_dir.setText(str(tmp_path / "run"))
    with qtbot.waitSignal(panel.controller.stepped, timeout=RUN_TIMEOUT_MS):
        assert panel.start()
    asked = []
    panel.confirm = lambda title, text: asked.append(title) or False
    assert not panel.close_requested()            # the user said no: the run goes on
    assert panel.controller.is_running and asked == ["Stop the run?"]
    panel.confirm = lambda title, text: True
    assert panel.close_requested()                # yes: stopped, and its thread has ended
    qtbot.waitUntil(lambda: not panel.controller.is_running, timeout=10_000)
    assert panel.summary is not None and panel.summary["status"] == "cancelled"
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_steps_are_drawn_together_at_most_once_per_refresh(panel, qtbot):
    """However fast steps come, the progress bar and the curves wait for the panel's refresh
    timer and are then drawn together with the newest step (one repaint of the window)."""
    from app.segmentation.panel import GUI_REFRESH_MS
    from uda_core.engine.events import StepEvent
    assert panel._refresh.interval() == GUI_REFRESH_MS >= 500
    panel.run_box.reset_progress()
    for step in range(1, 6):   # five steps in one go, as from a fast GPU
        panel.controller.stepped.emit(StepEvent(step, 10, {"total": 1.0 / step}, 0.1 * step))
    assert panel.run_box.progress.value() == 0                    # nothing drawn yet
    assert len(panel.curves.series()["loss/total"]) == 5         # the points are kept
    drawn = panel.curves.curve("loss/total").xData
    assert drawn is None or len(drawn) == 0
    qtbot.waitUntil(lambda: panel.run_box.progress.value() == 5, timeout=10_000)
    assert "step 5 / 10" in panel.run_box.progress.text()
    assert list(panel.curves.curve("loss/total").xData) == [1, 2, 3, 4, 5]


@pytest.mark.slow   # two demo runs (under a minute on a quiet 2-core machine)
def test_a_runs_mask_layers_are_added_before_it_starts_and_a_stopped_run_leaves_none(
        panel, qtbot, tmp_path):
    """The run's layers exist, empty, when Start returns (adding a napari layer holds the GUI
    thread for a fraction of a second, which the run's thread would wait for); the engine's
    previews only fill them. A run stopped before its first step leaves no mask layer, and
    the earlier run's stay."""
    load_one_demo_subject(panel, qtbot)
    panel.method_box.select("tent")
    panel.method_box.engine_form.set_values({"steps": 2, "score_every": 1, "batch_size": 4,
                                             "preview_every": 1, "select_by": "last"})
    panel.run_box.out_dir.setText(str(tmp_path / "run1"))
    inserted = []
    with qtbot.waitSignal(panel.controller.finished, timeout=RUN_TIMEOUT_MS):
        assert panel.start()
        names = [layer.name for layer in panel.viewer.layers]
        assert "run 1 · tent · before sub-100_t2" in names
        assert "run 1 · tent · mask sub-100_t2" in names
        assert panel.viewer.layers.selection.active.name == "run 1 · tent · mask sub-100_t2"
        assert panel.layers.mask_data(0) is None          # no mask in it yet
        panel.viewer.layers.events.inserted.connect(inserted.append)
    qtbot.waitUntil(lambda: not panel.data_box.busy, timeout=60_000)
    panel.viewer.layers.events.inserted.disconnect(inserted.append)
    assert inserted == []                         # the previews and final masks added none
    assert panel.layers.mask_data(0, before=True).any() and panel.layers.mask_data(0).any()

    panel.run_box.out_dir.setText(str(tmp_path / "run2"))
    with qtbot.waitSignal(panel.controller.stopped, timeout=RUN_TIMEOUT_MS):
        assert panel.start()
        assert "run 2 · tent · mask sub-100_t2" in panel.viewer.layers
        panel.stop()
    qtbot.waitUntil(lambda: not [layer for layer in panel.viewer.layers
                                 if layer.name.startswith("run 2")], timeout=60_000)
    names = [layer.name for layer in panel.viewer.layers]
    assert "run 1 · tent · mask sub-100_t2" in names and "run 1 · tent · before sub-100_t2" in names
