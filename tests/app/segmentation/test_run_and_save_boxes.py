"""The run box starts each run from a clean progress bar; declining to replace masks says so."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QMessageBox

from app.segmentation import save_box as save_module
from app.segmentation.run_box import RunBox
from app.segmentation.save_box import SaveBox


def test_a_new_run_does_not_show_the_last_runs_progress(qtbot):
    box = RunBox()
    qtbot.addWidget(box)
    box.show_progress(30, 30, 12.0)
    assert "30 / 30" in box.progress.text()
    box.reset_progress()
    assert box.progress.value() == 0 and "30" not in box.progress.text()
    assert "loading" in box.progress.text()


def test_progress_is_drawn_with_the_next_repaint_not_at_once(qtbot):
    """QProgressBar.setValue repaints at once: in a main window, a synchronous paint of the
    whole window (under Xvfb composited on the CPU with napari's canvas) beside the one
    that follows anyway. The step is drawn with the window's next repaint instead."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QMainWindow

    class Paints(QObject):
        count = 0

        def eventFilter(self, watched, event):  # noqa: N802 (Qt name)
            self.count += event.type() in (QEvent.Paint, QEvent.UpdateRequest)
            return False

    window, box = QMainWindow(), RunBox()
    window.setCentralWidget(box)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(100)
    paints = Paints()
    for watched in (window, box.progress):
        watched.installEventFilter(paints)
    box.show_progress(5, 10, 2.0)
    assert paints.count == 0
    qtbot.waitUntil(lambda: paints.count > 0, timeout=5_000)   # drawn with the next repaint
    assert box.progress.value() == 5 and "step 5 / 10" in box.progress.text()


def test_declining_to_replace_masks_replaces_the_last_saved_message(qtbot, tmp_path,
                                                                   monkeypatch):
    mask = tmp_path / "run" / "masks" / "a_seg.nii.gz"
    mask.parent.mkdir(parents=True)
    mask.write_bytes(b"new")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "a_seg.nii.gz").write_bytes(b"old")
    box = SaveBox()
    qtbot.addWidget(box)
    box.set_summary({"masks": [str(mask)], "adapted_model": str(tmp_path / "run" / "m.pt")})
    messages = []
    box.saved.connect(messages.append)
    monkeypatch.setattr(save_module.QFileDialog, "getExistingDirectory",
                        lambda *a, **k: str(folder))
    monkeypatch.setattr(save_module.QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    box._save_masks()
    assert (folder / "a_seg.nii.gz").read_bytes() == b"old"      # nothing replaced
    assert messages and "not saved" in messages[-1]
    monkeypatch.setattr(save_module.QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    box._save_masks()
    assert (folder / "a_seg.nii.gz").read_bytes() == b"new" and "Saved 1" in messages[-1]
    assert Path(messages[-1].split(" to ")[-1]) == folder


def test_method_box_recommends_ddm_with_pairs_and_uses_it(qtbot):
    from app.segmentation.method_box import MethodBox
    from tests.conftest import make_seg_bundle
    from uda_core.methods.base import PAIRED_SOURCE, TARGET
    box = MethodBox()
    qtbot.addWidget(box)
    bundle = make_seg_bundle(intensity_reference={"percentiles": [1.0, 99.0],
                                                  "values": [-1.0, 1.0]})
    box.update_availability(bundle, {TARGET, PAIRED_SOURCE})
    assert "Recommended for your data: <b>ddm</b>" in box.recommendation.text()
    box._use_recommendation()
    assert box.method == "ddm"
    box.update_availability(bundle, {TARGET})
    assert "<b>standardise</b>" in box.recommendation.text()
    box._use_recommendation()
    assert box.method == "standardise" and box.standardise.isChecked()


def test_method_box_recommends_blend_for_a_model_that_takes_the_guide(qtbot):
    from app.segmentation.method_box import MethodBox
    from uda_core.methods.base import TARGET
    from uda_core.models.bundle import load_model
    box = MethodBox()
    qtbot.addWidget(box)
    box.update_availability(load_model("demo:brain-t1"), {TARGET})
    assert ("Recommended for your data: <b>blend</b> with standardised intensities"
            in box.recommendation.text())
    box._use_recommendation()
    assert box.method == "blend" and box.standardise.isChecked()
    assert box.engine_settings()["select_by"] == "last" and box.engine_settings()["steps"] == 4
