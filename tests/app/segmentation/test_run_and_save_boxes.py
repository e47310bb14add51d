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
