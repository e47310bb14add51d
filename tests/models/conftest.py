"""Real-format model folders built once per test module: a tiny MONAI bundle and an
nnU-Net-shaped result folder (tests/models/real_formats.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models.real_formats import make_monai_bundle, make_nnunet_folder


@pytest.fixture(scope="module")
def monai_folder(tmp_path_factory) -> Path:
    return make_monai_bundle(tmp_path_factory.mktemp("monai") / "tiny_bundle")


@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory) -> Path:
    return make_nnunet_folder(tmp_path_factory.mktemp("nnunet"))
