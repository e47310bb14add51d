"""Tests for uda_core.models: the U-Net, the bundle format, safe loading, TorchScript, registry."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from uda_core.errors import ModelError
from uda_core.models import (
    BUILTIN_MODELS,
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    ModelBundle,
    UNet2D,
    describe,
    export_torchscript,
    load_model,
    resolve_model,
    resources_dir,
    save_bundle,
)

CLASSES = ["background", "CSF", "GM", "WM"]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def tiny_net(early_head: bool = True, num_classes: int = 4, depth: int = 2) -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(in_channels=1, num_classes=num_classes, base_channels=4, depth=depth,
                  early_head=early_head).eval()


def tiny_bundle(early_head: bool = True, **fields) -> ModelBundle:
    fields.setdefault("modality", "T1w")
    fields.setdefault("spacing_mm", [2.0, 2.0, 2.0])
    fields.setdefault("in_plane_shape", [16, 16])
    return ModelBundle.from_network(tiny_net(early_head), CLASSES, **fields)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- network


def test_unet_shapes_and_early_head(x):
    net = tiny_net()
    assert net(x).shape == (2, 4, 16, 16)
    logits, early = net.forward_with_early(x)
    assert logits.shape == early.shape == (2, 4, 16, 16)
    assert torch.equal(logits, net(x))
    assert net.early_block(x).shape == (2, 4, 16, 16)  # base_channels at full resolution
    convs = [m for m in net.early_head if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(4, 12), (12, 8), (8, 4)]
    assert all(c.bias is None for c in net.modules()
               if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)
               and c not in convs)


def test_unet_default_config_and_no_head(x):
    net = UNet2D()
    assert (net.base_channels, net.depth, net.num_classes) == (16, 3, 4)
    headless = tiny_net(early_head=False)
    assert headless.early_head is None
    with pytest.raises(RuntimeError, match="no early head"):
        headless.forward_with_early(x)


def test_unet_size_must_be_multiple_of_two_to_the_depth():
    with pytest.raises(ValueError, match="multiples of 4, got 10x16"):
        tiny_net()(torch.zeros(1, 1, 10, 16))
    with pytest.raises(ValueError, match="expects input of shape"):
        tiny_net()(torch.zeros(1, 2, 16, 16))


def test_unet_is_scriptable(x):
    for head in (True, False):
        net = tiny_net(head)
        scripted = torch.jit.script(net)
        assert torch.allclose(scripted(x), net(x))
    assert torch.allclose(scripted.forward(x), net(x))
    scripted = torch.jit.script(tiny_net())
    assert torch.allclose(scripted.forward_with_early(x)[1], tiny_net().forward_with_early(x)[1])


# ---------------------------------------------------------------- bundle round trip


def test_save_load_round_trip(tmp_path, x):
    prior = {"constant": [0.7, 0.1, 0.1, 0.1], "positions": [0.0, 1.0],
             "per_position": [[0.9, 0.05, 0.03, 0.02], [0.6, 0.1, 0.15, 0.15]]}
    bundle = tiny_bundle(class_ratio_prior=prior,
                         provenance={"parent": None, "method": None, "date": "2024-01-01",
                                     "package_version": "0.1.0", "seed": np.int64(3)})
    path = save_bundle(bundle, tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == BUNDLE_FORMAT and raw["version"] == BUNDLE_VERSION
    assert not any(k.startswith("early_head") for k in raw["state_dict"])

    loaded = load_model(path)
    assert loaded.class_names == CLASSES and loaded.class_ratio_prior == prior
    assert loaded.spacing_mm == [2.0, 2.0, 2.0] and loaded.provenance["seed"] == 3
    assert loaded.num_classes == 4 and loaded.has_early_head
    for key, value in bundle.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value)
    original, rebuilt = tiny_net(), loaded.build_network()
    assert not rebuilt.training
    for a, b in zip(original.forward_with_early(x), rebuilt.forward_with_early(x), strict=True):
        assert torch.equal(a, b)


def test_save_is_atomic_and_never_overwrites(tmp_path):
    path = tmp_path / "m.pt"
    save_bundle(tiny_bundle(), path)
    before = path.read_bytes()
    with pytest.raises(ModelError, match="already exists") as err:
        save_bundle(tiny_bundle(early_head=False), path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
    save_bundle(tiny_bundle(early_head=False), path, overwrite=True)
    assert not load_model(path).has_early_head
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    with pytest.raises(ModelError, match="folder does not exist"):
        save_bundle(tiny_bundle(), tmp_path / "nope" / "m.pt")
    with pytest.raises(TypeError, match="provenance.config"):
        save_bundle(tiny_bundle(provenance={"config": object()}), tmp_path / "o.pt")


def test_head_weights_are_optional_and_attached(tmp_path, x):
    headless = tiny_bundle(early_head=False)
    net = headless.build_network()
    assert net.early_head is None
    assert torch.equal(net(x), tiny_net()(x))  # same seed, same main weights

    # a bundle whose arch_kwargs ask for a head but which carries no head weights still loads
    asked = dataclasses.replace(headless, arch_kwargs={**headless.arch_kwargs, "early_head": True})
    assert load_model(save_bundle(asked, tmp_path / "a.pt")).build_network().early_head is None

    bundle = tiny_bundle()
    head = bundle.build_network().early_head
    for key, value in bundle.early_head_state_dict.items():
        assert torch.equal(head.state_dict()[key], value)


def test_with_network_keeps_metadata(x):
    bundle = tiny_bundle()
    net = bundle.build_network()
    with torch.no_grad():
        net.final.bias.add_(1.0)
    adapted = bundle.with_network(net, provenance={"parent": "demo:brain-t1", "method": "sfda"})
    assert adapted.class_names == CLASSES and adapted.modality == "T1w"
    assert torch.allclose(adapted.build_network()(x), net(x))
    assert not torch.equal(bundle.state_dict["final.bias"], adapted.state_dict["final.bias"])


# ---------------------------------------------------------------- refusing bad files


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch_zip", "plain_pickle"])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "marker"
    content = {"format": BUNDLE_FORMAT, "version": 1, "payload": _Evil(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch_zip":
        torch.save(content, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(content, f, protocol=4)
    assert not marker.exists()
    with pytest.raises(ModelError) as err:
        load_model(path)
    message = str(err.value)
    assert message.startswith(str(path) + ": refused")
    assert "Python objects other than weights" in message and "open" in message
    assert "\n" not in message
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(tiny_net(), path)
    with pytest.raises(ModelError, match="Python objects other than weights"):
        load_model(path)


@pytest.mark.parametrize("content, problem", [
    (os.urandom(2000), "not a PyTorch model file"),
    (b"hello, I am a text file\n", "not a PyTorch model file"),
    (b"", "empty"),
])
def test_bad_bytes(tmp_path, content, problem):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=problem) as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "absent.pt")
    with pytest.raises(ModelError, match="is a folder"):
        load_model(tmp_path)


def _saved_dict(tmp_path: Path, **changes) -> Path:
    bundle = tiny_bundle()
    content = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
               "architecture": bundle.architecture, "arch_kwargs": bundle.arch_kwargs,
               "state_dict": bundle.state_dict, "class_names": CLASSES,
               "early_head_state_dict": bundle.early_head_state_dict}
    content.update(changes)
    path = tmp_path / "b.pt"
    torch.save(content, path)
    return path


@pytest.mark.parametrize("changes, problem", [
    ({"format": "something-else"}, "not a UDA Studio model bundle"),
    ({"version": BUNDLE_VERSION + 1}, "newer UDA Studio"),
    ({"architecture": "resnet"}, "unknown architecture 'resnet'"),
    ({"arch_kwargs": {"depth": 3, "base_channels": 4}}, r"missing 28 keys \(down\.2\."),
    ({"class_names": ["bg", "fg", "other"]}, "class-count mismatch: 3 class names"),
    ({"class_ratio_prior": {"constant": [0.5, 0.5]}}, "4 non-negative numbers"),
])
def test_inconsistent_bundles(tmp_path, changes, problem):
    path = _saved_dict(tmp_path, **changes)
    with pytest.raises(ModelError, match=problem) as err:
        load_model(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_final_layer_class_mismatch(tmp_path):
    state = ModelBundle.from_network(tiny_net(num_classes=3), ["a", "b", "c"]).state_dict
    path = _saved_dict(tmp_path, state_dict=state, early_head_state_dict=None)
    with pytest.raises(ModelError, match="final layer has 3 outputs but the bundle names 4"):
        load_model(path)


def test_bare_state_dict_is_explained(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(tiny_net().state_dict(), path)
    with pytest.raises(ModelError, match="bare state dict"):
        load_model(path)


# ---------------------------------------------------------------- TorchScript


def test_torchscript_import_with_metadata(tmp_path, x):
    scripted = torch.jit.script(tiny_net())
    meta = {"class_names": CLASSES, "modality": "T2w", "spacing_mm": [1.0, 1.0, 3.0]}
    path = tmp_path / "ts.pt"
    torch.jit.save(scripted, str(path), _extra_files={"uda.json": json.dumps(meta)})
    bundle = load_model(path)
    assert bundle.torchscript is not None and bundle.state_dict == {}
    assert bundle.class_names == CLASSES and bundle.modality == "T2w"
    assert bundle.spacing_mm == [1.0, 1.0, 3.0] and bundle.has_early_head
    net = bundle.build_network()
    assert isinstance(net, torch.jit.ScriptModule)
    assert torch.allclose(net(x), tiny_net()(x))


def test_torchscript_without_metadata_gets_defaults(tmp_path):
    path = tmp_path / "plain_ts.pt"
    torch.jit.save(torch.jit.script(tiny_net(early_head=False, num_classes=3)), str(path))
    bundle = load_model(path)
    assert bundle.class_names == ["class_0", "class_1", "class_2"]
    assert bundle.orientation == "RAS" and bundle.slice_axis == 2
    assert not bundle.has_early_head


def test_torchscript_class_mismatch(tmp_path):
    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(tiny_net()), str(path),
                   _extra_files={"uda.json": json.dumps({"class_names": ["a", "b"]})})
    with pytest.raises(ModelError, match="class-count mismatch"):
        load_model(path)


def test_export_torchscript_round_trip(tmp_path, x):
    bundle = tiny_bundle(provenance={"parent": "demo:brain-t1", "method": "early"})
    path = export_torchscript(bundle, tmp_path / "exported.pt")
    loaded = load_model(path)
    assert loaded.torchscript is not None and loaded.has_early_head
    assert loaded.provenance == {"parent": "demo:brain-t1", "method": "early"}
    assert loaded.in_plane_shape == [16, 16]
    assert torch.allclose(loaded.build_network().forward_with_early(x)[1],
                          tiny_net().forward_with_early(x)[1])


# ---------------------------------------------------------------- registry and description


def test_resources_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("UDA_RESOURCES", raising=False)
    assert resources_dir() == Path(__file__).resolve().parents[2] / "resources"
    # What a wheel installs: the same files as the package uda_core._resources (the editable
    # install maps it onto the checkout's resources/), found through importlib.resources.
    from uda_core.io.resources import _installed_resources

    assert (_installed_resources() / "models" / "brain-t1.pt").is_file()
    monkeypatch.setenv("UDA_RESOURCES", str(tmp_path))
    assert resources_dir() == tmp_path


def test_builtin_names(monkeypatch, tmp_path):
    monkeypatch.setenv("UDA_RESOURCES", str(tmp_path))
    known = "known models: demo:brain-t1, demo:brain-t1-3d, demo:brain-t1-robust, demo:reg-t1"
    with pytest.raises(ModelError, match=known):
        resolve_model("demo:nothing")
    with pytest.raises(ModelError, match="missing"):
        load_model("demo:brain-t1")
    (tmp_path / "models").mkdir()
    save_bundle(tiny_bundle(), tmp_path / BUILTIN_MODELS["demo:brain-t1"][0])
    assert load_model("demo:brain-t1").class_names == CLASSES


def test_describe():
    lines = describe(tiny_bundle(provenance={"parent": "demo:brain-t1", "method": "sfda"}))
    text = "\n".join(lines)
    assert "Classes (4): background, CSF, GM, WM" in text
    assert "T1w, 2 x 2 x 2 mm, 16 x 16 voxels in-plane, RAS, axial slices" in text
    assert "Early head: yes" in text and "Class-ratio prior: no" in text
    assert "Parent: demo:brain-t1; method: sfda" in text
    assert "Early head: no" in describe(tiny_bundle(early_head=False))


def test_the_shipped_3d_demo_model_loads_without_code_and_is_listed(capsys):
    """demo:brain-t1-3d: a few MB, weights_only (a plain safe load), a 3D bundle with the
    per-patch prior that sfda uses; `uda models` lists it with its description."""
    from uda_core.cli import main

    path = resolve_model("demo:brain-t1-3d")
    assert path.stat().st_size < 5 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)   # refuses any code
    assert isinstance(raw, dict)
    bundle = load_model("demo:brain-t1-3d")
    assert bundle.dims == 3 and bundle.architecture == "monai.UNet"
    assert bundle.window["roi_size"] == [48, 48, 48] and bundle.spacing_mm == [2.0, 2.0, 2.0]
    assert bundle.class_names == CLASSES and bundle.skull_stripped_input is False
    assert len(bundle.class_ratio_prior["per_position"]) == 10
    assert bundle.provenance["command"] == "bash scripts/make_demo_model_3d.sh"
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "demo:brain-t1-3d" in listed and "Dimensions: 3D" in listed
