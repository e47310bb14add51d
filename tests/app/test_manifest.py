"""app/napari.yaml: a valid npe2 manifest that the installed distribution exposes."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import npe2
import pytest

from uda_core.io.readers import VOLUME_SUFFIXES

MANIFEST = Path(__file__).resolve().parents[2] / "app" / "napari.yaml"
NPE2 = Path(sys.executable).with_name("npe2")
PANEL = "uda_studio.segmentation.panel:UdaPanel"


@pytest.fixture(scope="module")
def manifest() -> npe2.PluginManifest:
    return npe2.PluginManifest.from_file(MANIFEST)


def test_manifest_names(manifest):
    assert manifest.name == "uda-studio"
    assert manifest.display_name == "UDA Studio"


def test_installed_distribution_exposes_this_manifest(manifest):
    installed = npe2.PluginManifest.from_distribution("uda-studio")
    assert installed.name == manifest.name
    assert installed.contributions == manifest.contributions


def test_npe2_validate_cli():
    """What a plugin author runs: schema check plus importing every python_name."""
    result = subprocess.run([str(NPE2), "validate", "uda-studio", "--imports"],
                            capture_output=True, encoding="utf-8", errors="replace",
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_python_names_import(manifest):
    for command in manifest.contributions.commands:
        module_name, _, attribute = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module_name), attribute)), command.id


def test_panel_widget(manifest):
    widgets = {w.command: w.display_name for w in manifest.contributions.widgets}
    assert widgets["uda-studio.panel"] == "UDA Studio"
    assert widgets["uda-studio.registration"] == "UDA Studio: registration"
    commands = {c.id: c for c in manifest.contributions.commands}
    assert commands["uda-studio.panel"].python_name == PANEL


def test_reader_patterns_follow_uda_core(manifest):
    [reader] = manifest.contributions.readers
    assert set(reader.filename_patterns) == {f"*{suffix}" for suffix in VOLUME_SUFFIXES}
    assert reader.accepts_directories  # DICOM series folders


def test_sample_data_entries(manifest):
    names = {s.key: s.display_name for s in manifest.contributions.sample_data}
    assert names == {
        "demo-t1": "Demo T1 (source domain)",
        "demo-t2": "Demo T2 (target domain)",
        "demo-flair": "Demo FLAIR-like (target)",
        "demo-protocol": "Demo protocol shift (target)",
    }
