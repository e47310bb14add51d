"""The app says what it is: versioned title, icon, About dialog with licences and the built-in
models' provenance read from the bundles."""

from __future__ import annotations

from uda_core import __version__
from uda_core.models.bundle.builtins import BUILTIN_MODELS


def test_texts_name_version_licences_and_every_builtin_model():
    from app import about

    assert about.window_title() == f"UDA Studio {__version__}"
    licences = about.licences_html()
    assert "MIT License" in licences and "McConnell Brain Imaging Centre" in licences
    names = [name for name, _version, _licence in about.components()]
    assert "torch" in names and "napari" in names
    models = about.models_html()
    for name in BUILTIN_MODELS:
        assert name in models
    # demo:brain-t1's provenance, as its bundle records it
    assert "Made: 2026-12-02T15:49:01+00:00 with UDA Studio 0.1.0" in models
    assert "bash scripts/make_demo_model.sh" in models
    assert "not available" not in models


def test_short_provenance_values():
    from app.about import _short

    assert _short({"dice": 0.85472, "n": 3}) == "dice=0.855, n=3"
    assert len(_short("x" * 1000)) == 300


def test_window_is_branded_and_about_opens(make_napari_viewer, qtbot):
    from app.about import AboutDialog, brand_window

    viewer = make_napari_viewer()
    brand_window(viewer)
    window = viewer.window._qt_window
    assert window.windowTitle() == f"UDA Studio {__version__}"
    assert not window.windowIcon().isNull()
    menu = [m for m in viewer.window.main_menu.actions() if m.text() == "&UDA Studio"]
    assert [a.text() for a in menu[0].menu().actions()] == ["About UDA Studio..."]
    dialog = AboutDialog(window)
    qtbot.addWidget(dialog)
    assert [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())] == ["Models",
                                                                            "Licences"]
    assert "demo:brain-t1" in dialog.tabs.widget(0).toPlainText()
