"""The model box with imported networks: a MONAI bundle folder or zip, an nnU-Net folder, a
multi-channel network; the card's network lines and the methods that apply."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import torch

from app.segmentation import model_box as model_box_module
from app.segmentation.model_box import ModelBox
from tests.models.real_formats import make_monai_bundle, make_nnunet_folder


@pytest.fixture(scope="module")
def monai_folder(tmp_path_factory):
    return make_monai_bundle(tmp_path_factory.mktemp("monai") / "tiny_bundle")


@pytest.fixture
def box(qtbot):
    widget = ModelBox()
    qtbot.addWidget(widget)
    failures: list[str] = []
    widget.failed.connect(failures.append)
    widget.failures = failures
    return widget


def _zip(folder, archive):
    with zipfile.ZipFile(archive, "w") as z:
        for file in folder.rglob("*"):
            if file.is_file():
                z.write(file, str(file.relative_to(folder.parent)))
    return archive


def test_a_monai_bundle_folder_through_the_folder_chooser(box, monai_folder, monkeypatch):
    monkeypatch.setattr(model_box_module.QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: str(monai_folder)))
    box.folder_button.click()
    assert box.failures == [] and box.spec == str(monai_folder)
    card = box.card.text()
    assert "3D network: 32 x 32 x 32 voxel windows, 4 classes, 1 input channel." in card
    assert "Imported from a MONAI bundle (tiny_brain_tissue)." in card
    assert "Original network (not adapted yet)." in card     # importing is no adaptation
    # no class-ratio prior in a MONAI bundle: sfda needs one; 3D: only the patch methods
    assert "Methods that apply: tent, adabn, ddm, selftrain." in card
    details = box.details_text.text()
    assert "early unavailable: needs a model bundle with an early-feature head; a 2D " \
           "(slice) network; 3D networks adapt with sfda, tent, adabn, ddm, selftrain" in details
    assert "Imported from: MONAI bundle" in details


def test_a_zipped_monai_bundle_through_the_file_chooser(box, monai_folder, tmp_path,
                                                        monkeypatch):
    archive = _zip(monai_folder, tmp_path / "bundle.zip")
    assert "*.zip" in model_box_module.MODEL_FILTER
    monkeypatch.setattr(model_box_module.QFileDialog, "getOpenFileName",
                        staticmethod(lambda *a, **k: (str(archive), "")))
    box._ask_file()
    assert box.failures == [] and box.bundle.dims == 3
    assert "Imported from a MONAI bundle" in box.card.text()


def test_an_nnunet_folder_and_the_2d_demo_model(box, tmp_path):
    assert box.load(str(make_nnunet_folder(tmp_path)))
    card = box.card.text()
    assert "Imported from an nnU-Net v2 result folder (Tiny)." in card
    assert "3D network: 32 x 32 x 32 voxel windows, 4 classes" in card
    assert box.load("demo:brain-t1")
    card = box.card.text()
    assert "2D network: slice by slice, 4 classes, 1 input channel." in card
    assert "Imported" not in card and "Methods that apply: " in card and "selftrain" in card


def test_a_multi_channel_network_says_not_supported_yet(box, monai_folder, tmp_path):
    folder = tmp_path / "four"
    shutil.copytree(monai_folder, folder)
    inference = folder / "configs" / "inference.json"
    config = json.loads(inference.read_text())
    config["network_def"]["in_channels"] = 4
    inference.write_text(json.dumps(config))
    from monai.networks.nets import UNet
    four = UNet(3, 4, 4, (4, 8), (2,), num_res_units=0, norm="batch")
    torch.save(four.state_dict(), folder / "models" / "model.pt")
    assert box.load(str(folder))
    card = box.card.text()
    assert "Not supported yet: 4 input channels" in card
    assert model_box_module.WARNING_COLOUR in card        # it stands out
    assert "No adaptation method applies to this network." in card
