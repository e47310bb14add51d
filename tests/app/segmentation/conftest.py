"""Every panel test records run speeds in its own folder, not in the user's home."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _speeds_in_tmp(tmp_path, monkeypatch):
    from app.segmentation import run_box
    monkeypatch.setattr(run_box, "SPEEDS_FILE", tmp_path / "speeds.json")
