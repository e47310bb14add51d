"""A registration bundle given to the segmentation panel: one dialog saying it is not a
segmentation model, the model chosen before is kept, and the panel takes a good one next.
(The panel's other bad inputs, a text file, a 4D image, a broken DICOM folder, a single
slice: tests/app/segmentation/test_inputs.py.)"""

from __future__ import annotations

from app.segmentation.panel import UdaPanel


def test_a_registration_bundle_in_the_segmentation_panel_is_one_dialog(
        make_napari_viewer, tiny_reg_model, tiny_bundle_path, tmp_path, monkeypatch):
    from app.segmentation import run_box
    monkeypatch.setattr(run_box, "SPEEDS_FILE", tmp_path / "speeds.json")
    panel = UdaPanel(make_napari_viewer())
    assert panel.model_box.load(tiny_bundle_path)
    shown: list[str] = []
    panel.model_box.failed.connect(shown.append)
    assert not panel.model_box.load(tiny_reg_model)
    assert len(shown) == 1 and "tiny_reg.pt" in shown[0]
    assert "not a segmentation model" in shown[0] and "\n" not in shown[0]
    dialog = panel._last_error_box
    assert dialog is not None and dialog.isVisible() and dialog.text() == shown[0]
    dialog.close()
    assert panel.model_box.spec == str(tiny_bundle_path)     # the earlier choice is kept
    assert panel.model_box.load("demo:brain-t1") and shown == [shown[0]]
