"""Choosing the pretrained network: a built-in one, a file (our bundle, TorchScript, a zipped
MONAI bundle or nnU-Net folder) or a folder (a MONAI bundle, an nnU-Net v2 result folder),
and a short card about it.

The card says in plain words what the network finds and on which scans
(:func:`uda_core.models.bundle.plain.plain_description`), what kind of network it is and
where it was imported from (:func:`~uda_core.models.bundle.plain.network_lines`; a
multi-channel network's "not supported yet" line stands out) and which methods apply; the
technical lines (architecture, normalisation, slice axis) and why the other methods do not
apply sit behind a "Details" disclosure.
"""

from __future__ import annotations

import html

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from uda_core.errors import UdaError
from uda_core.methods.registry import METHODS, missing_needs
from uda_core.models.bundle import ModelBundle, describe, load_model
from uda_core.models.bundle.builtins import BUILTIN_MODELS
from uda_core.models.bundle.plain import network_lines, plain_description

from ..widgets.collapsible import Collapsible

SEGMENTATION_BUILTINS = [name for name in BUILTIN_MODELS if name != "demo:reg-t1"]
MODEL_FILTER = ("Models: bundles, TorchScript, zipped MONAI bundles or nnU-Net folders "
                "(*.pt *.pth *.ts *.zip);;All files (*)")
WARNING_COLOUR = "#e8a33d"
EVERYTHING = {"target", "paired_source", "source_labelled"}   # model-side needs only


def capability_lines(bundle: ModelBundle) -> list[str]:
    """What the model cannot do, as "`method` unavailable: reason" lines (model-side needs
    only: the data the user gives is judged later)."""
    lines = []
    for name, method in METHODS.items():
        missing = missing_needs(method, bundle, EVERYTHING)
        if missing:
            lines.append(f"{name} unavailable: needs {'; '.join(missing)}")
    return lines


def methods_line(bundle: ModelBundle) -> str:
    """"Methods that apply: ..." (as far as the model decides; the data is judged later)."""
    usable = [name for name, method in METHODS.items()
              if not missing_needs(method, bundle, EVERYTHING)]
    return (f"Methods that apply: {', '.join(usable)}." if usable
            else "No adaptation method applies to this network.")


def card_html(bundle: ModelBundle) -> str:
    """The card: the plain description, then the network lines and the methods line
    (a "Not supported yet" line on its own, in the warning colour)."""
    network = []
    for line in network_lines(bundle):
        text = html.escape(line)
        network.append(f"<br><span style='color:{WARNING_COLOUR}'>{text}</span>"
                       if line.startswith("Not supported yet") else text)
    return (html.escape(" ".join(plain_description(bundle))) + "<br>"
            + " ".join(network) + "<br>" + html.escape(methods_line(bundle)))


class ModelBox(QGroupBox):
    """Emits `model_changed(spec, bundle)` with the spec given to the core (a path or a
    `demo:` name) and the loaded bundle; `failed(message)` when a file cannot be used."""

    model_changed = Signal(str, object)
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        self.spec: str | None = None
        self.bundle: ModelBundle | None = None
        self.choice = QComboBox()
        self.choice.addItems(SEGMENTATION_BUILTINS)
        self.choice.setPlaceholderText("Choose a built-in model…")
        self.choice.setCurrentIndex(-1)   # nothing loaded: show no model's name as if it were
        self.choice.setToolTip("\n".join(f"{n}: {BUILTIN_MODELS[n][1]}"
                                         for n in SEGMENTATION_BUILTINS))
        self.choice.activated.connect(lambda _: self.load(self.choice.currentText()))
        open_button = QPushButton("Open file…")
        open_button.setToolTip("A UDA Studio model bundle (.pt), a TorchScript file, or a "
                               "MONAI bundle or nnU-Net v2 result folder zipped (.zip)")
        open_button.clicked.connect(self._ask_file)
        self.folder_button = QPushButton("Open folder…")
        self.folder_button.setToolTip("A MONAI bundle folder (configs/, models/model.pt) or an "
                                      "nnU-Net v2 result folder (plans.json, fold_*/): read "
                                      "without running any of its code")
        self.folder_button.clicked.connect(self._ask_folder)
        self.card = QLabel("No model loaded.")
        self.card.setTextFormat(Qt.TextFormat.RichText)
        self.card.setWordWrap(True)
        self.details = Collapsible("Details")
        self.details_text = QLabel()
        self.details_text.setWordWrap(True)
        self.details.add(self.details_text)
        self.details.setVisible(False)
        row = QHBoxLayout()   # the built-in list, then "or open" a file or a folder
        row.addWidget(self.choice, 1)
        row.addWidget(open_button)
        opens = QHBoxLayout()
        opens.addStretch(1)
        opens.addWidget(self.folder_button)   # under Open file…: the row fits a third of a laptop
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(opens)
        layout.addWidget(self.card)
        layout.addWidget(self.details)

    def load(self, spec: str) -> bool:
        """Load a model by path or built-in name; False (and `failed`) when it cannot be."""
        try:
            bundle = load_model(spec)
        except UdaError as exc:
            self.failed.emit(str(exc))
            return False
        self.spec, self.bundle = str(spec), bundle
        if spec in SEGMENTATION_BUILTINS:
            self.choice.setCurrentText(spec)
        self.card.setText(card_html(bundle))
        self.details_text.setText(self._details_html(bundle))
        self.details.setVisible(True)
        self.model_changed.emit(self.spec, bundle)
        return True

    def _details_html(self, bundle: ModelBundle) -> str:
        lines = [html.escape(line) for line in [str(self.spec)] + describe(bundle)]
        limits = capability_lines(bundle)
        text = "<br>".join(lines)
        if limits:
            text += f"<br><span style='color:{WARNING_COLOUR}'>" + "<br>".join(
                html.escape(line) for line in limits) + "</span>"
        return f"<small>{text}</small>"

    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", "", MODEL_FILTER)
        if path:
            self.load(path)

    def _ask_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a MONAI bundle or nnU-Net folder")
        if path:
            self.load(path)
