"""A section with a title that folds its content away ("▸ Advanced settings")."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QSizePolicy, QToolButton, QVBoxLayout, QWidget


class Collapsible(QWidget):
    """A title button and, below it, widgets shown only while the section is open.

    Folded, it takes the height of its title alone (no blank space for the hidden content).
    `toggled(open)` fires when the user or :meth:`set_open` changes it.
    """

    toggled = Signal(bool)

    def __init__(self, title: str, open_: bool = False, tooltip: str = "",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self.header = QToolButton()
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setStyleSheet("QToolButton { font-weight: bold; border: none; }")
        self.header.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        if tooltip:
            self.header.setToolTip(tooltip)
        self.body = QWidget()
        self.content = QVBoxLayout(self.body)
        self.content.setContentsMargins(12, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.header)
        layout.addWidget(self.body)
        self.header.toggled.connect(self._show)
        self.header.setChecked(open_)
        self._show(open_)

    @property
    def is_open(self) -> bool:
        return self.header.isChecked()

    def set_open(self, open_: bool) -> None:
        self.header.setChecked(open_)

    def add(self, widget: QWidget, stretch: int = 0) -> QWidget:
        """Put `widget` into the section (below what is there); returns it."""
        self.content.addWidget(widget, stretch)
        return widget

    def _show(self, open_: bool) -> None:
        self.header.setArrowType(Qt.DownArrow if open_ else Qt.RightArrow)
        self.body.setVisible(open_)
        self.toggled.emit(open_)
