"""What the desktop app says it is: the versioned window title, the icon, and the About dialog
(version, licences, where the built-in models come from).

:func:`brand_window` is the one hook the window calls. The texts are plain functions so that
they can be checked without a display; every line of model provenance comes from the model
bundles themselves (:func:`uda_core.models.bundle.describe` and their ``provenance``).
"""

from __future__ import annotations

import html
import importlib.metadata
import platform
import sys
import weakref
from pathlib import Path

from qtpy.QtGui import QIcon
from qtpy.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
)

from uda_core import __version__

ICONS = Path(__file__).resolve().parent / "icons"

#: The distributions the app is built from, shown with the licence their metadata declares.
COMPONENTS = ("torch", "napari", "PySide6_Essentials", "vispy", "pyqtgraph", "numpy", "scipy",
              "nibabel", "SimpleITK", "matplotlib", "npe2", "superqt", "magicgui")


def window_title() -> str:
    return f"UDA Studio {__version__}"


def app_icon() -> QIcon:
    icon = QIcon()
    for name in ("uda-studio.svg", "uda-studio.png"):
        if (ICONS / name).is_file():
            icon.addFile(str(ICONS / name))
    return icon


def brand_window(viewer) -> None:
    """Versioned title, our icon, and a "UDA Studio > About UDA Studio" menu on `viewer`."""
    viewer.title = window_title()
    window = viewer.window._qt_window
    icon = app_icon()
    window.setWindowIcon(icon)
    QApplication.instance().setWindowIcon(icon)
    # a plain menu of our own: napari rebuilds its model-driven menus (Help...) at will
    menu = viewer.window.main_menu.addMenu("&UDA Studio")
    action = menu.addAction("About UDA Studio...")
    parent = weakref.ref(window)   # no strong reference from the menu back to the window
    action.triggered.connect(lambda: AboutDialog(parent()).exec())


def _licence_field(dist: importlib.metadata.Distribution) -> str:
    meta = dist.metadata
    text = meta.get("License-Expression") or meta.get("License") or ""
    text = text.strip().splitlines()[0] if text.strip() else ""
    if not text or len(text) > 60:   # some put the whole licence text in the field
        classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                       if c.startswith("License ::")]
        text = ", ".join(classifiers) or (text[:57] + "..." if text else "not declared")
    return text


def components() -> list[tuple[str, str, str]]:
    """(name, version, licence) of each of :data:`COMPONENTS` found installed."""
    found = []
    for name in COMPONENTS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append((dist.metadata["Name"], dist.version, _licence_field(dist)))
    return found


def project_licence() -> str:
    """UDA Studio's own LICENSE text: the checkout's, else the one in the installed metadata."""
    checkout = Path(__file__).resolve().parents[1] / "LICENSE"
    if checkout.is_file() and (checkout.parent / "pyproject.toml").is_file():
        return checkout.read_text(encoding="utf-8")
    try:
        files = importlib.metadata.distribution("uda-studio").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name.upper().startswith("LICEN"):
            return f.read_text(encoding="utf-8")
    return "MIT License (the LICENSE file was not found in this installation)."


def licence_folder() -> Path | None:
    """The installer's folder of every bundled package's licence files (frozen builds only)."""
    if getattr(sys, "frozen", False):
        folder = Path(sys.executable).resolve().parent / "licenses"
        return folder if folder.is_dir() else None
    return None


def _pre(text: str) -> str:
    return f"<pre style='white-space:pre-wrap'>{html.escape(text)}</pre>"


def licences_html() -> str:
    from uda_core.io.resources import resources_dir

    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(v)}</td>"
                   f"<td>{html.escape(lic)}</td></tr>" for n, v, lic in components())
    parts = [f"<h3>UDA Studio {__version__}</h3>{_pre(project_licence())}",
             "<h3>Main components</h3><table cellspacing='6'><tr><th align='left'>package</th>"
             f"<th align='left'>version</th><th align='left'>licence</th></tr>{rows}</table>"]
    folder = licence_folder()
    if folder is not None:
        parts.append(f"<p>The full licence texts of every bundled package: "
                     f"<code>{html.escape(str(folder))}</code></p>")
    notice = resources_dir() / "template" / "NOTICE.txt"
    if notice.is_file():
        parts.append("<h3>Template (demo data are simulated from it)</h3>"
                     + _pre(notice.read_text(encoding="utf-8")))
    return "".join(parts)


#: Provenance entries shown besides describe()'s lines (fingerprints and configs are left out).
PROVENANCE_SHOWN = ("command", "data", "augmentation", "summary")


def _short(value, limit: int = 300) -> str:
    """A provenance value on one line: dicts as ``key=value``, floats to 3 digits."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_short(v, limit)}" for k, v in value.items())
    elif isinstance(value, float):
        text = f"{value:.3g}"
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def models_html() -> str:
    """Each built-in model: its summary, :func:`describe` lines and recorded provenance."""
    from uda_core.errors import UdaError
    from uda_core.models.bundle import describe, load_model
    from uda_core.models.bundle.builtins import BUILTIN_MODELS

    parts = []
    for name, (_relative, summary) in BUILTIN_MODELS.items():
        parts.append(f"<h3>{html.escape(name)}</h3><p>{html.escape(summary)}</p>")
        try:
            bundle = load_model(name, task=None)
        except UdaError as exc:
            parts.append(f"<p><i>not available: {html.escape(exc.problem)}</i></p>")
            continue
        lines = describe(bundle)
        prov = bundle.provenance or {}
        for key in PROVENANCE_SHOWN:
            if prov.get(key) not in (None, "", {}, []):
                lines.append(f"{key.capitalize()}: {_short(prov[key])}")
        parts.append("<ul>" + "".join(f"<li>{html.escape(str(line))}</li>"
                                      for line in lines) + "</ul>")
    return "".join(parts)


def versions_text() -> str:
    import qtpy

    return (f"UDA Studio {__version__} &middot; Python {platform.python_version()} &middot; "
            f"Qt {qtpy.QT_VERSION} ({qtpy.API_NAME}) &middot; "
            + " &middot; ".join(f"{n} {v}" for n, v, _ in components()
                                if n.lower() in ("torch", "napari")))


class AboutDialog(QDialog):
    """Version, licences and model provenance, in two tabs under a header."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("About UDA Studio")
        self.resize(720, 560)
        header = QHBoxLayout()
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(64, 64))
        header.addWidget(logo)
        title = QLabel(f"<b style='font-size:16pt'>UDA Studio {__version__}</b><br>"
                       "Adapt a pretrained MRI network to your scanner without annotations."
                       f"<br><small>{versions_text()}</small>")
        title.setWordWrap(True)
        header.addWidget(title, 1)
        self.tabs = QTabWidget()
        for label, text in (("Models", models_html()), ("Licences", licences_html())):
            browser = QTextBrowser()
            browser.setOpenExternalLinks(True)
            browser.setHtml(text)
            self.tabs.addTab(browser, label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(buttons)
