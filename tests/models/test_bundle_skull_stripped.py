"""The bundle's ``skull_stripped_input`` field: saved, loaded, validated, described; bundles
written before it existed (and readers that do not know it) still work."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import make_seg_bundle
from uda_core.errors import ModelError
from uda_core.models.bundle import bundle_metadata, describe, load_model, save_bundle
from uda_core.models.bundle.format import _bundle_from_dict

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.mark.parametrize("value", [True, False, None])
def test_round_trip(tmp_path, value):
    path = save_bundle(make_seg_bundle(skull_stripped_input=value), tmp_path / "m.pt")
    assert load_model(path).skull_stripped_input is value
    content = torch.load(path, weights_only=True)
    assert content["skull_stripped_input"] is value


def test_old_bundle_without_the_field_loads_as_unknown(tmp_path):
    path = save_bundle(make_seg_bundle(skull_stripped_input=True), tmp_path / "m.pt")
    content = torch.load(path, weights_only=True)
    del content["skull_stripped_input"]
    torch.save(content, path)
    bundle = load_model(path)
    assert bundle.skull_stripped_input is None
    assert "Skull stripping: not recorded (older bundle)" in describe(bundle)


def test_reader_without_the_field_ignores_it(tmp_path):
    """A reader that knows only the old fields (the keys it picks) still gets a bundle."""
    meta = bundle_metadata(make_seg_bundle(skull_stripped_input=False))
    assert meta["skull_stripped_input"] is False
    old_keys = ("format", "version", "architecture", "arch_kwargs", "class_names", "modality",
                "spacing_mm", "in_plane_shape", "orientation", "slice_axis", "normalisation",
                "class_ratio_prior", "provenance")
    assert set(meta) == set(old_keys) | {"skull_stripped_input", "intensity_reference", "dims",
                                         "window", "imported"}
    bundle = make_seg_bundle()
    content = dict(meta, state_dict=bundle.state_dict,
                   early_head_state_dict=bundle.early_head_state_dict)
    assert _bundle_from_dict(content, tmp_path / "m.pt").skull_stripped_input is False


@pytest.mark.parametrize("bad", ["yes", 1, 0.0, [True]])
def test_invalid_value_is_a_model_error(tmp_path, bad):
    path = save_bundle(make_seg_bundle(), tmp_path / "m.pt")
    content = torch.load(path, weights_only=True)
    content["skull_stripped_input"] = bad
    torch.save(content, path)
    with pytest.raises(ModelError, match="skull_stripped_input must be true, false or null"):
        load_model(path)
    with pytest.raises(ModelError, match="skull_stripped_input"):
        save_bundle(dataclasses.replace(make_seg_bundle(), skull_stripped_input=bad),
                    tmp_path / "n.pt")


def test_describe_in_plain_words():
    def line(value):
        lines = describe(make_seg_bundle(skull_stripped_input=value))
        return next(x for x in lines if x.startswith("Skull stripping:"))

    assert "needed (the network expects brain-extracted scans)" in line(True)
    assert "not needed" in line(False) and "whole heads" in line(False)
    assert "not recorded" in line(None)


def test_torchscript_keeps_the_field(tmp_path):
    from uda_core.models.bundle import export_torchscript
    path = export_torchscript(make_seg_bundle(skull_stripped_input=False), tmp_path / "m.ts")
    assert load_model(path).skull_stripped_input is False
