"""The class-ratio prior as a small editable table: one row per class, its share in %.

Starts from the model bundle's constant prior (``class_ratio_prior["constant"]``), or equal
shares when the bundle has none. Shows the sum and warns when it is not 100 %; values()
always returns fractions that sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtCore import QEvent, Qt, Signal
from qtpy.QtGui import QPalette
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStyledItemDelegate,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

WARNING_COLOURS = ("#e3b617", "#9a6700")   # on dark, on light backgrounds (napari's first)
SUM_TOLERANCE = 0.05         # percentage points
EDIT_TOLERANCE = 1e-4        # fraction of a slice: smaller differences are not user edits


class _ShareDelegate(QStyledItemDelegate):
    """Edits a share with a spin box (0-100 %) and shows it with two decimals."""

    def createEditor(self, parent, option, index):
        box = QDoubleSpinBox(parent)
        box.setRange(0.0, 100.0)
        box.setDecimals(2)
        box.setSuffix(" %")
        box.setFrame(False)
        return box

    def displayText(self, value, locale):
        try:
            return f"{float(value):.2f}"
        except (TypeError, ValueError):
            return str(value)


def _fractions(shares: Sequence[float]) -> list[float]:
    shares = np.asarray(shares, dtype=np.float64)
    total = shares.sum()
    if shares.size == 0 or not np.isfinite(total) or total <= 0 or (shares < 0).any():
        raise ValueError("the class shares must be >= 0 and not all zero")
    return (shares / total).tolist()


def constant_prior(prior: dict | Sequence[float] | None, num_classes: int) -> list[float] | None:
    """Fractions from a bundle's prior dict (its "constant") or a plain list, or None when
    there is none or it does not have one share per class."""
    if isinstance(prior, dict):
        prior = prior.get("constant")
    if prior is None or len(prior) != num_classes:
        return None
    try:
        return _fractions(prior)
    except ValueError:
        return None


class PriorTable(QWidget):
    """Editable class shares. `changed()` fires after every edit, normalise or reset."""

    changed = Signal()

    def __init__(self, class_names: Sequence[str] = (),
                 prior: dict | Sequence[float] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Class", "Share"])
        self.table.verticalHeader().setVisible(False)
        self.table.setItemDelegateForColumn(1, _ShareDelegate(self.table))
        self.table.setEditTriggers(QAbstractItemView.AllEditTriggers)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        self.table.itemChanged.connect(self._on_edit)
        self.sum_label = QLabel()
        self.sum_label.setWordWrap(True)
        self.normalise_button = QPushButton("Normalise")
        self.normalise_button.setToolTip("Scale the shares so that they sum to 100 %")
        self.normalise_button.clicked.connect(self.normalise)
        self.reset_button = QPushButton()
        self.reset_button.clicked.connect(self.use_model_prior)
        buttons = QHBoxLayout()
        buttons.addWidget(self.normalise_button)
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.sum_label)
        layout.addLayout(buttons)
        self._model: list[float] | None = None
        self.set_model_prior(class_names, prior)

    # -- state ---------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return [self.table.item(r, 0).text() for r in range(self.table.rowCount())]

    @property
    def has_model_prior(self) -> bool:
        """Whether the model gave a usable prior (else the table started at equal shares)."""
        return self._model is not None

    def model_shares(self) -> list[float]:
        """The starting fractions: the model's prior, or equal shares."""
        n = self.table.rowCount()
        if self._model is not None:
            return list(self._model)
        return [1.0 / n] * n if n else []

    def shares_percent(self) -> list[float]:
        """The shares as shown, in % (they may not sum to 100)."""
        return [float(self.table.item(r, 1).data(Qt.EditRole))
                for r in range(self.table.rowCount())]

    def sum_percent(self) -> float:
        return float(sum(self.shares_percent()))

    def values(self) -> list[float]:
        """Fractions per class, summing to 1; ValueError when all shares are zero."""
        if not self.table.rowCount():
            raise ValueError("no classes: load a model first")
        return _fractions(self.shares_percent())

    @property
    def is_user_edited(self) -> bool:
        """Whether the shares (normalised) differ from the model's prior (or equal shares)."""
        try:
            current = self.values()
        except ValueError:
            return self.table.rowCount() > 0
        return bool(np.max(np.abs(np.subtract(current, self.model_shares()))) > EDIT_TOLERANCE)

    # -- changes -------------------------------------------------------------------------
    def set_model_prior(self, class_names: Sequence[str],
                        prior: dict | Sequence[float] | None) -> None:
        """New classes and the model's prior (a bundle's class_ratio_prior dict, a list of
        shares, or None for equal shares); the table shows them, unedited."""
        names = list(class_names)
        self._model = constant_prior(prior, len(names)) if names else None
        self.table.blockSignals(True)
        self.table.setRowCount(len(names))
        for row, name in enumerate(names):
            item = QTableWidgetItem(name)
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
            self.table.setItem(row, 0, item)
            share = QTableWidgetItem()
            share.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.table.setItem(row, 1, share)
        self.table.blockSignals(False)
        self.reset_button.setText("Use model's prior" if self._model else "Equal shares")
        self.reset_button.setToolTip("Put back the class shares the model was trained with"
                                     if self._model else
                                     "The model has no prior: give every class the same share")
        self._fit_height()
        self.use_model_prior()

    def set_shares(self, shares: Sequence[float], percent: bool = True) -> None:
        """Show `shares` (in % unless percent=False); ValueError on a wrong count."""
        if len(shares) != self.table.rowCount():
            raise ValueError(f"{len(shares)} shares for {self.table.rowCount()} classes")
        scale = 1.0 if percent else 100.0
        self.table.blockSignals(True)
        for row, share in enumerate(shares):
            self.table.item(row, 1).setData(Qt.EditRole, float(share) * scale)
        self.table.blockSignals(False)
        self._on_edit()

    def use_model_prior(self) -> None:
        self.set_shares(self.model_shares(), percent=False)

    def normalise(self) -> None:
        try:
            self.set_shares(self.values(), percent=False)
        except ValueError as exc:
            self.sum_label.setText(f"<span style='color:{self.warning_colour()}'>{exc}</span>")

    def warning_colour(self) -> str:
        dark = self.palette().color(QPalette.Window).value() < 128
        return WARNING_COLOURS[0] if dark else WARNING_COLOURS[1]

    def _on_edit(self, *_) -> None:
        self._show_sum()
        self.changed.emit()

    def changeEvent(self, event) -> None:  # Qt override: re-colour the warning on a new theme
        if event.type() in (QEvent.PaletteChange, QEvent.StyleChange) and \
                hasattr(self, "_model"):
            self._show_sum()
        super().changeEvent(event)

    def _show_sum(self) -> None:
        total = self.sum_percent()
        if not self.table.rowCount():
            text = "No classes yet: load a model."
        elif abs(total - 100.0) <= SUM_TOLERANCE:
            text = f"Sum: {total:.1f} %"
        else:
            text = (f"<span style='color:{self.warning_colour()}'>Sum: {total:.1f} %, not 100 %. "
                    f"Press Normalise, or the shares are scaled to 100 % when used.</span>")
        edited = " <small>(edited: used instead of the model's)</small>" \
            if self.is_user_edited and self.has_model_prior else ""
        self.sum_label.setText(text + edited)

    def _fit_height(self) -> None:
        """Show every row without scrolling (a few classes at most in practice)."""
        self.table.resizeRowsToContents()
        rows = sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        frame = 2 * self.table.frameWidth()
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + rows
                                  + frame + 2)
