"""MONAI bundles and nnU-Net v2 folders, real formats built in the test: imported, predicted
on the input grid, adapted; hostile variants refused without their code ever running."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models.real_formats import (
    DEMO_T1,
    RESENC_ARCH,
    make_nnunet_folder,
)
from uda_core.cli import main
from uda_core.errors import ModelError
from uda_core.io.readers import read_volume
from uda_core.models.bundle import describe, load_model
from uda_core.models.imports import import_model
from uda_core.models.inference import expected_windows, segment_volume
from uda_core.models.nets.plain_unet import PlainConvUNet
from uda_core.models.nets.resenc_unet import ResidualEncoderUNet
from uda_core.models.sliding_window import predict_volume, window_count

DATA = Path(__file__).parent / "data"


class _RunsCode:
    """Unpickling this creates ``path`` (builtins.open in write mode): the marker of code run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _edit_inference(folder: Path, change) -> None:
    path = folder / "configs" / "inference.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


# ---------------------------------------------------------------- networks and windows


@pytest.mark.parametrize("network, reference, encoder_key", [
    (PlainConvUNet, "nnunet_plainconvunet_reference.pt", "n_conv_per_stage"),
    # ResidualEncoderUNet: the reference has blocks that stride, that change channels, both
    # and neither
    (ResidualEncoderUNet, "nnunet_resencunet_reference.pt", "n_blocks_per_stage"),
])
def test_our_unets_compute_what_nnunets_own_networks_compute(network, reference, encoder_key):
    """The reference outputs were computed by dynamic-network-architectures itself
    (scripts/make_nnunet_reference.py)."""
    ref = torch.load(DATA / reference, weights_only=True)
    plan = ref["plan"]
    net = network(in_channels=1, num_classes=ref["num_classes"], dims=3,
                  features_per_stage=plan["features_per_stage"],
                  kernel_sizes=plan["kernel_sizes"], strides=plan["strides"],
                  n_conv_per_stage_decoder=plan["n_conv_per_stage_decoder"],
                  **{encoder_key: plan[encoder_key]}).eval()
    net.load_state_dict(ref["state_dict"], strict=True)
    with torch.no_grad():
        out = net(ref["input"])
    torch.testing.assert_close(out, ref["output"], rtol=1e-5, atol=1e-5)


def test_sliding_window_counts_windows_and_cancel_stops_it():
    net = torch.nn.Conv3d(1, 3, 1)
    window = {"roi_size": [8, 8, 8], "overlap": 0.5, "mode": "gaussian", "mirror_axes": [],
              "axes": [0, 1, 2]}
    volume = np.random.default_rng(0).normal(size=(1, 20, 13, 8)).astype(np.float32)
    seen = []
    probs = predict_volume(net, volume, window, torch.device("cpu"), 1, on_batch=seen.append)
    assert probs.shape == (3, 20, 13, 8)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    assert len(seen) == window_count((20, 13, 8), (8, 8, 8), 0.5) == 4 * 3 * 1

    def cancel(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_volume(net, volume, window, torch.device("cpu"), 1, on_batch=cancel)


def test_mirroring_averages_flips_and_axes_permute_back():
    """A network that is not flip-symmetric: mirrored inference differs; the axes map back."""
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    volume = np.random.default_rng(1).normal(size=(1, 10, 12, 14)).astype(np.float32)
    base = {"roi_size": [14, 12, 10], "overlap": 0.0, "mode": "constant", "mirror_axes": [],
            "axes": [2, 1, 0]}
    plain = predict_volume(net, volume, base, torch.device("cpu"))
    x = torch.from_numpy(volume)[None].permute(0, 1, 4, 3, 2)   # grid (X, Y, Z) -> network
    with torch.no_grad():
        direct = torch.softmax(net(x), 1)[0].permute(0, 3, 2, 1).numpy()
        logits = 0.5 * (net(x) + net(x.flip(2)).flip(2))           # mirrored network axis 0
        flipped = torch.softmax(logits, 1)[0].permute(0, 3, 2, 1).numpy()
    np.testing.assert_allclose(plain, direct, atol=1e-5)
    mirrored = predict_volume(net, volume, dict(base, mirror_axes=[0]), torch.device("cpu"))
    np.testing.assert_allclose(mirrored, flipped, atol=1e-5)
    assert np.abs(mirrored - plain).max() > 1e-3  # the network is not flip-symmetric


# ---------------------------------------------------------------- MONAI bundles


def test_monai_bundle_imports_with_its_settings(monai_folder):
    bundle = load_model(monai_folder)
    assert bundle.dims == 3 and bundle.architecture == "monai.UNet"
    assert bundle.class_names == ["background", "CSF", "GM", "WM"]
    assert bundle.spacing_mm == [2.0, 2.0, 2.0]
    assert bundle.window["roi_size"] == [32, 32, 32] and bundle.window["overlap"] == 0.25
    assert bundle.normalisation["foreground"] == "all"
    assert bundle.imported["format"] == "monai-bundle"
    text = "\n".join(describe(bundle))
    assert "3D" in text and "32 x 32 x 32" in text and "MONAI bundle" in text
    # the imported weights are the trained ones: same output as the network MONAI saved
    from monai.networks.nets import UNet
    original = UNet(3, 1, 4, (4, 8), (2,), num_res_units=0, norm="batch").eval()
    original.load_state_dict(torch.load(monai_folder / "models" / "model.pt",
                                        weights_only=True))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bundle.build_network()(x), original(x))


def test_predict_and_import_model_cli_with_a_monai_folder_and_zip(monai_folder, tmp_path):
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for file in monai_folder.rglob("*"):
            if file.is_file():
                z.write(file, f"tiny_bundle/{file.relative_to(monai_folder)}")
    out = tmp_path / "masks"
    assert main(["predict", "--model", str(archive), "--out", str(out), "--overlap", "0",
                 str(DEMO_T1)]) == 0
    mask = read_volume(out / "sub-100_t1_seg.nii.gz")
    source = read_volume(DEMO_T1)
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    assert set(np.unique(mask.data)) <= {0, 1, 2, 3}
    converted = tmp_path / "imported.pt"
    assert main(["import-model", str(monai_folder), "--out", str(converted)]) == 0
    bundle = load_model(converted)
    assert bundle.dims == 3 and bundle.imported["format"] == "monai-bundle"
    assert bundle.provenance["parent"] == str(monai_folder)
    assert bundle.provenance["method"] == "import (monai-bundle)"


@pytest.mark.parametrize("change, message", [
    (lambda c: c["network_def"].update(channels="$[4, 8]"), "network_def.channels is an "
                                                            "expression"),
    (lambda c: c["network_def"].update(strides="@strides"), "network_def.strides is an "
                                                            "expression"),
    (lambda c: c["network_def"].update(_target_="scripts.net.TinyNet"), "is not one of the "
                                                                        "MONAI networks"),
    (lambda c: c["network_def"].update(_target_="os.system"), "is not one of the MONAI"),
    (lambda c: c["network_def"].update(act={"_target_": "torch.nn.ReLU"}),
     "network_def.act._target_ would build or call an object"),
    (lambda c: c["preprocessing"]["transforms"].append({"_target_": "scripts.prep.Custom"}),
     "from the bundle's own scripts"),
    (lambda c: c["postprocessing"]["transforms"].insert(
        0, {"_target_": "Activationsd", "keys": "pred", "sigmoid": True}), "multi-label"),
    (lambda c: c["preprocessing"]["transforms"][3].update(pixdim="$@spacing"),
     "Spacing.pixdim is an expression"),
])
def test_monai_bundle_needing_its_own_code_is_refused_in_one_line(monai_folder, tmp_path,
                                                                  change, message):
    folder = _copy(monai_folder, tmp_path)
    _edit_inference(folder, change)
    with pytest.raises(ModelError, match="inference.json") as err:
        import_model(folder)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_monai_bundle_scripts_logging_and_pickled_code_never_run(monai_folder, tmp_path):
    folder = _copy(monai_folder, tmp_path)
    marker = tmp_path / "ran"
    (folder / "scripts").mkdir()
    (folder / "scripts" / "__init__.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (folder / "configs" / "logging.conf").write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=f\n"
        "[logger_root]\nhandlers=h\n[handler_h]\nclass=FileHandler\n"
        f"args=({str(marker)!r}, 'w')\nformatter=f\n[formatter_f]\nformat=%(message)s\n")
    _edit_inference(folder, lambda c: c.update(imports=["$import scripts"]))
    assert import_model(folder).dims == 3          # imported, its code untouched
    assert not marker.exists()
    weights = folder / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    torch.save({"model": state, "extra": _RunsCode(marker)}, weights)
    with pytest.raises(ModelError, match="refused: the file contains Python objects"):
        import_model(folder)
    assert not marker.exists()


def test_monai_weights_outside_the_folder_are_refused(monai_folder, tmp_path):
    folder = _copy(monai_folder, tmp_path)
    elsewhere = tmp_path / "elsewhere.pt"
    (folder / "models" / "model.pt").rename(elsewhere)
    (folder / "models" / "model.pt").symlink_to(elsewhere)
    with pytest.raises(ModelError, match="points outside the model folder"):
        import_model(folder)


def _zip_with(path: Path, name: str, data: bytes, *, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("b/configs/metadata.json", "{}")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, data)
    return path


@pytest.mark.parametrize("name, data, symlink, message", [
    ("b/../../evil.json", b"{}", False, "absolute or '..' path"),
    ("/etc/evil.json", b"{}", False, "absolute or '..' path"),
    ("b/models/model.pt", b"/etc/passwd", True, "symbolic link"),
    ("b/models/model.pt", b"\0" * (8 * 2**20), False, "decompression bomb"),
])
def test_hostile_zips_are_refused_before_extraction(tmp_path, name, data, symlink, message):
    archive = _zip_with(tmp_path / "hostile.zip", name, data, symlink=symlink)
    with pytest.raises(ModelError, match=message):
        load_model(archive)
    assert not (tmp_path / "evil.json").exists()


# ---------------------------------------------------------------- nnU-Net v2


def test_nnunet_folder_imports_with_its_plans(nnunet_folder):
    bundle = load_model(nnunet_folder)
    assert bundle.architecture == "nnunet_plain_unet" and bundle.dims == 3
    assert bundle.window == {"roi_size": [32, 32, 32], "overlap": 0.5, "mode": "gaussian",
                             "mirror_axes": [0, 1, 2], "axes": [2, 1, 0]}
    assert bundle.normalisation["kind"] == "percentile_zscore"
    assert bundle.class_names == ["background", "CSF", "GM", "WM"]
    assert bundle.imported["fold"] == "0" and bundle.imported["configuration"] == "3d_fullres"
    assert any("nnU-Net" in line for line in describe(bundle))


def test_nnunet_predicts_on_the_input_grid(nnunet_folder):
    bundle = load_model(nnunet_folder)
    bundle = dataclasses.replace(bundle, window=dict(bundle.window, overlap=0.0))  # fewer windows
    volume = read_volume(DEMO_T1)
    done: list[int] = []
    labels = segment_volume(bundle, bundle.build_network(), volume, torch.device("cpu"),
                            batch_size=4, mirror=False, on_batch=done.append)
    assert sum(done) == expected_windows(bundle, volume)  # the progress bar's total
    assert labels.shape == volume.shape and np.allclose(labels.affine, volume.affine)
    assert labels.data.dtype == np.uint8 and labels.data.max() <= 3


def test_nnunet_resenc_folder_imports_and_predicts(tmp_path):
    """A ResEnc-plans folder: the residual network rebuilt, its checkpoint loaded strictly."""
    root = make_nnunet_folder(tmp_path, arch=RESENC_ARCH)
    bundle = load_model(root)
    assert bundle.architecture == "nnunet_resenc_unet" and bundle.dims == 3
    assert bundle.arch_kwargs["n_blocks_per_stage"] == [1, 2, 2]
    network = bundle.build_network()
    assert any(".blocks.1.conv2." in key for key in network.state_dict())
    bundle = dataclasses.replace(bundle, window=dict(bundle.window, overlap=0.0))
    volume = read_volume(DEMO_T1)
    labels = segment_volume(bundle, network, volume, torch.device("cpu"), batch_size=4,
                            mirror=False)
    assert labels.shape == volume.shape and labels.data.max() <= 3
    plans = json.loads((root / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["block"] = \
        "dynamic_network_architectures.building_blocks.residual.BottleneckD"
    (root / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="plans.json: architecture option 'block' is not "
                                         "supported yet"):
        import_model(root)


def test_nnunet_pickled_code_is_refused_and_postprocessing_never_opened(nnunet_folder,
                                                                        tmp_path):
    marker = tmp_path / "ran"
    root = _copy(nnunet_folder, tmp_path)
    torch.save(_RunsCode(marker), root / "postprocessing.pkl")   # a hostile plain pickle
    assert import_model(root).dims == 3
    assert not marker.exists()
    checkpoint = root / "fold_0" / "checkpoint_final.pth"
    content = torch.load(checkpoint, weights_only=False)          # our own test file
    content["logging"]["evil"] = _RunsCode(marker)
    torch.save(content, checkpoint)
    with pytest.raises(ModelError, match="refused: the checkpoint contains Python objects"):
        import_model(root)
    assert not marker.exists()


def test_nnunet_unsupported_plans_are_refused_in_one_line(nnunet_folder, tmp_path):
    root = _copy(nnunet_folder, tmp_path)
    plans = json.loads((root / "plans.json").read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    arch["network_class_name"] = "nnunetv2.evil.Net"
    (root / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="plans.json: network 'nnunetv2.evil.Net' is not "
                                         "supported yet"):
        import_model(root)


# ---------------------------------------------------------------- adapting 3D networks


@pytest.mark.parametrize("method", ["tent", "adabn"])
def test_adapt_a_monai_network_on_3d_patches(monai_folder, tmp_path, method):
    out = tmp_path / method
    settings = tmp_path / "engine.json"
    settings.write_text(json.dumps({"engine": {"batch_size": 2, "score_every": 2}}))
    assert main(["adapt", "--model", str(monai_folder), "--method", method, "--steps", "2",
                 "--out", str(out), "--device", "cpu", "--config", str(settings),
                 str(DEMO_T1)]) == 0
    adapted = load_model(out / "adapted.pt")
    assert adapted.dims == 3 and adapted.provenance["method"] == method
    assert adapted.imported["format"] == "monai-bundle"
    mask = read_volume(out / "masks" / "sub-100_t1_seg.nii.gz")
    assert mask.shape == read_volume(DEMO_T1).shape
    # adapted.pt may keep the source weights (no step scored better); the last step's may not
    before = load_model(monai_folder).state_dict
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["network"]
    changed = [k for k, v in last.items() if not torch.equal(v.cpu(), before[k])]
    assert changed and all(".running_" in k or "num_batches" in k or method == "tent"
                           for k in changed)
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "time_s" in r] == [1, 2]


def test_3d_refusals_are_one_line(monai_folder, tmp_path, capsys):
    """A method without a 3D path, a malformed --roi, a multi-channel network."""
    assert main(["adapt", "--model", str(monai_folder), "--method", "early", "--out",
                 str(tmp_path / "st"), str(DEMO_T1)]) == 1
    assert ("a 2D (slice) network; 3D networks adapt with sfda, tent, adabn, ddm, "
            "selftrain") in capsys.readouterr().err
    assert main(["predict", "--model", str(monai_folder), "--out", str(tmp_path / "m"),
                 "--roi", "96,96", str(DEMO_T1)]) == 1
    assert "--roi must be three positive integers" in capsys.readouterr().err
    folder = _copy(monai_folder, tmp_path)
    _edit_inference(folder, lambda c: c["network_def"].update(in_channels=4))
    from monai.networks.nets import UNet
    four = UNet(3, 4, 4, (4, 8), (2,), num_res_units=0, norm="batch")
    torch.save(four.state_dict(), folder / "models" / "model.pt")
    bundle = import_model(folder)
    assert "Input channels: 4 (multi-channel input: not supported yet)" in describe(bundle)
    assert main(["predict", "--model", str(folder), "--out", str(tmp_path / "m4"),
                 str(DEMO_T1)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("the network takes 4 input channels (e.g. several MRI contrasts at "
                        "once); multi-channel input is not supported yet") and "\n" not in err


def test_nnunet_folder_as_a_zip(nnunet_folder, tmp_path):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for file in nnunet_folder.parent.rglob("*"):
            if file.is_file():
                z.write(file, str(file.relative_to(nnunet_folder.parent.parent)))
    bundle = load_model(archive)
    assert bundle.imported["format"] == "nnunet-v2" and bundle.imported["source"] == str(archive)
    reference = load_model(nnunet_folder)
    assert all(torch.equal(v, reference.state_dict[k]) for k, v in bundle.state_dict.items())


def test_monai_label_cleanup_is_left_out_and_said(monai_folder, tmp_path):
    folder = _copy(monai_folder, tmp_path)
    _edit_inference(folder, lambda c: c["postprocessing"]["transforms"].append(
        {"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": [1]}))
    lines = describe(import_model(folder))
    assert ("Import note: postprocessing KeepLargestConnectedComponent is not applied (labels "
            "as the network predicts them)") in lines


def test_nnunet_plans_from_before_v2_3_describe_the_same_network(nnunet_folder, tmp_path):
    """Older plans name the U-Net by UNet_class_name and base / max features instead of an
    'architecture' entry; the same weights load into the same network."""
    root = _copy(nnunet_folder, tmp_path)
    plans = json.loads((root / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    arch = config.pop("architecture")["arch_kwargs"]
    config.update({"UNet_class_name": "PlainConvUNet", "UNet_base_num_features": 4,
                   "unet_max_num_features": 16, "conv_kernel_sizes": arch["kernel_sizes"],
                   "pool_op_kernel_sizes": arch["strides"],
                   "n_conv_per_stage_encoder": arch["n_conv_per_stage"],
                   "n_conv_per_stage_decoder": arch["n_conv_per_stage_decoder"]})
    (root / "plans.json").write_text(json.dumps(plans))
    old, new = import_model(root), import_model(nnunet_folder)
    assert old.arch_kwargs == new.arch_kwargs
    config["UNet_class_name"] = "ResidualEncoderUNet"
    (root / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="UNet_class_name 'ResidualEncoderUNet'"):
        import_model(root)
