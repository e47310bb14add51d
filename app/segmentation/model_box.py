"""Choosing the pretrained network: a built-in one or a file, and a short card about it.

The card says in plain words what the network finds and on which scans
(:func:`uda_core.models.bundle.plain.plain_description`); the technical lines (architecture,
normalisation, slice axis) and what the model cannot do sit behind a "Details" disclosure.
"""

from __future__ import annotations

import html

from qtpy.QtCore import Signal
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
from uda_core.models.bundle.plain import plain_description

from ..widgets.collapsible import Collapsible

SEGMENTATION_BUILTINS = [name for name in BUILTIN_MODELS if name != "demo:reg-t1"]
MODEL_FILTER = "Model bundles and TorchScript (*.pt *.pth *.ts);;All files (*)"


def capability_lines(bundle: ModelBundle) -> list[str]:
    """What the model cannot do, as "`method` unavailable: reason" lines (model-side needs
    only: the data the user gives is judged later)."""
    everything = {"target", "paired_source", "source_labelled"}
    lines = []
    for name, method in METHODS.items():
        missing = missing_needs(method, bundle, everything)
        if missing:
            lines.append(f"{name} unavailable: needs {'; '.join(missing)}")
    return lines


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
        open_button.setToolTip("A UDA Studio model bundle (.pt) or a TorchScript file")
        open_button.clicked.connect(self._ask_file)
        self.card = QLabel("No model loaded.")
        self.card.setWordWrap(True)
        self.details = Collapsible("Details")
        self.details_text = QLabel()
        self.details_text.setWordWrap(True)
        self.details.add(self.details_text)
        self.details.setVisible(False)
        row = QHBoxLayout()
        row.addWidget(self.choice, 1)
        row.addWidget(open_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
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
        self.card.setText(" ".join(plain_description(bundle)))
        self.details_text.setText(self._details_html(bundle))
        self.details.setVisible(True)
        self.model_changed.emit(self.spec, bundle)
        return True

    def _details_html(self, bundle: ModelBundle) -> str:
        lines = [html.escape(line) for line in [str(self.spec)] + describe(bundle)]
        limits = capability_lines(bundle)
        text = "<br>".join(lines)
        if limits:
            text += "<br><span style='color:#e8a33d'>" + "<br>".join(
                html.escape(line) for line in limits) + "</span>"
        return f"<small>{text}</small>"

    def _ask_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", "", MODEL_FILTER)
        if path:
            self.load(path)
