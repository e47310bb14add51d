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
