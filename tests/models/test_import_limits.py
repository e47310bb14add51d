"""Huge declared shapes in MONAI bundles and nnU-Net folders (real formats, built in the test):
refused in one line naming the file and the key, before any network is built or any weight
read into memory (a convolution being built fails the test)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from uda_core.cli import main
from uda_core.errors import ModelError
from uda_core.models.imports import import_model


@pytest.fixture
def no_network_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network was built")
    monkeypatch.setattr(torch.nn.Conv3d, "__init__", refuse)


def _edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def _network(change):
    return lambda c: change(c["network_def"])


def _refused(path: Path, *expected: str) -> str:
    with pytest.raises(ModelError) as err:
        import_model(path)
    message = str(err.value)
    assert "\n" not in message and "refused" in message, message
    for text in expected:
        assert text in message, message
    return message


MONAI_CASES = {
    "a channel count of a million": (
        _network(lambda n: n.update(channels=[1_000_000, 8])),
        "inference.json: network_def.channels[0] is 1e+06 (more than 8192)"),
    "a million residual units": (
        _network(lambda n: n.update(num_res_units=10**6)),
        "network_def.num_res_units is 1e+06 (more than 64)"),
    "widths within the cap but far too many parameters": (
        _network(lambda n: n.update(channels=[8192] * 8, strides=[2] * 7)),
        "network_def declares about", "parameters (more than 1e+09"),
    "a list of a thousand stages": (
        _network(lambda n: n.update(channels=[4] * 1000, strides=[2] * 999)),
        "network_def.channels has 1000 items (more than 64)"),
    "infinity as a width": (
        _network(lambda n: n.update(channels=[float("inf"), 8])),
        "network_def.channels[0] is inf"),
    "a window of 100000 voxels a side": (
        lambda c: c["inferer"].update(roi_size=[100_000] * 3),
        "inference.json: inferer.roi_size is [100000, 100000, 100000] (more than 1024"),
    "a window of 1024^3 voxels": (
        lambda c: c["inferer"].update(roi_size=[1024] * 3),
        "inferer.roi_size is [1024, 1024, 1024]: 1073741824 voxels (more than 16777216)"),
}


@pytest.mark.parametrize("case", sorted(MONAI_CASES))
def test_monai_bundle_declaring_huge_sizes_is_refused_before_building(
        case, monai_folder, tmp_path, no_network_built):
    change, *expected = MONAI_CASES[case]
    folder = Path(shutil.copytree(monai_folder, tmp_path / "bundle"))
    _edit_json(folder / "configs" / "inference.json", change)
    _refused(folder, *expected)


def test_monai_metadata_declaring_a_billion_classes_is_refused(monai_folder, tmp_path,
                                                              no_network_built):
    folder = Path(shutil.copytree(monai_folder, tmp_path / "bundle"))
    _edit_json(folder / "configs" / "metadata.json", lambda m: next(iter(
        m["network_data_format"]["outputs"].values())).update(num_channels=10**9))
    _refused(folder, "metadata.json: network_data_format output.num_channels is 1e+09")


def _huge(shape=(100_000, 100_000)) -> torch.Tensor:
    """A tensor declaring 1e10 values over one stored float (a 1.5 KB file)."""
    return torch.zeros(1).expand(*shape)


def test_monai_weights_declaring_a_huge_tensor_are_refused_from_their_shapes(
        monai_folder, tmp_path, no_network_built):
    folder = Path(shutil.copytree(monai_folder, tmp_path / "bundle"))
    weights = folder / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    name = next(iter(state))
    state[name] = _huge()
    torch.save(state, weights)
    assert weights.stat().st_size < 2**20
    _refused(folder, "models/model.pt", f"tensor {name} declares shape [100000, 100000]")


def test_weights_in_torchs_legacy_format_are_refused_as_unmappable(monai_folder, tmp_path,
                                                                   no_network_built):
    folder = Path(shutil.copytree(monai_folder, tmp_path / "bundle"))
    weights = folder / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    torch.save(state, weights, _use_new_zipfile_serialization=False)
    _refused(folder, "models/model.pt", "pre-1.6 format", "torch.save")


def _plans(change):
    return lambda p: change(p["configurations"]["3d_fullres"])


NNUNET_CASES = {
    "a patch of 100000 voxels a side": (
        _plans(lambda c: c.update(patch_size=[100_000] * 3)),
        "plans.json: configurations.3d_fullres.patch_size is [100000, 100000, 100000]"),
    "a million features in a stage": (
        _plans(lambda c: c["architecture"]["arch_kwargs"].update(
            features_per_stage=[4, 8, 10**6])),
        "plans.json: configurations.3d_fullres.architecture.arch_kwargs.features_per_stage[2]"
        " is 1e+06 (more than 8192)"),
    "a million stages": (
        _plans(lambda c: c["architecture"]["arch_kwargs"].update(n_stages=10**6)),
        "arch_kwargs.n_stages is 1e+06 (more than 64)"),
    "a million convolutions per stage": (
        _plans(lambda c: c["architecture"]["arch_kwargs"].update(
            n_conv_per_stage=[2, 2, 10**6])),
        "arch_kwargs.n_conv_per_stage[2] is 1e+06 (more than 64)"),
}


@pytest.mark.parametrize("case", sorted(NNUNET_CASES))
def test_nnunet_plans_declaring_huge_sizes_are_refused_before_building(
        case, nnunet_folder, tmp_path, no_network_built):
    change, *expected = NNUNET_CASES[case]
    root = Path(shutil.copytree(nnunet_folder.parent, tmp_path / "Dataset")) / nnunet_folder.name
    _edit_json(root / "plans.json", change)
    _refused(root, *expected)


def test_nnunet_checkpoint_declaring_a_huge_tensor_is_refused_from_its_shapes(
        nnunet_folder, tmp_path, no_network_built):
    root = Path(shutil.copytree(nnunet_folder.parent, tmp_path / "Dataset")) / nnunet_folder.name
    path = root / "fold_0" / "checkpoint_final.pth"
    from uda_core.models.imports.nnunet import load_checkpoint
    checkpoint = load_checkpoint(path)
    checkpoint["optimizer_state"] = {"exp_avg": [_huge((30_000, 30_000))] * 8}
    torch.save(checkpoint, path)
    _refused(path.parent.parent, "checkpoint_final.pth",
             "its tensors declare 7.2e+09 values (more than 4e+09)")


def test_import_model_cli_says_it_in_one_line(monai_folder, tmp_path, capsys,
                                              no_network_built):
    folder = Path(shutil.copytree(monai_folder, tmp_path / "bundle"))
    _edit_json(folder / "configs" / "inference.json",
               _network(lambda n: n.update(channels=[1_000_000, 8])))
    code = main(["import-model", str(folder), "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "network_def.channels[0]" in lines[0], err
    assert not (tmp_path / "m.pt").exists()


def test_the_tiny_real_formats_pass_the_limits(monai_folder, nnunet_folder):
    assert import_model(monai_folder).dims == 3
    assert import_model(nnunet_folder).dims == 3
