"""A titled list of input files (volumes or DICOM folders) with Add, Remove and drag and drop.

Each entry carries its own check: "…" while it is being read, a tick when it can be used, a
cross with the reason beside it (the reader's own one-line message) when it cannot. A bad
entry never hides the others: the list only shows what its owner (the data box) reports.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

READING, GOOD, BAD = "reading", "good", "bad"
_MARK = {READING: "…", GOOD: "✓", BAD: "✗"}
_COLOUR = {BAD: "#e0563b"}
_STATUS_ROLE = Qt.UserRole + 1
_REASON_ROLE = Qt.UserRole + 2
MAX_LIST_HEIGHT = 150   # px; longer lists scroll

VOLUME_FILTER = ("Volumes (*.nii *.nii.gz *.mgz *.mgh *.mha *.mhd *.nrrd *.nhdr);;"
                 "All files (*)")


class FileList(QWidget):
    """One kind of input (e.g. "Target volumes"); `note` says why it is needed or optional."""

    changed = Signal()

    def __init__(self, title: str, note: str = "", parent: QWidget | None = None, *,
                 folders: bool = True):
        """folders: offer "Add DICOM folder…" (not for label maps, which come as files)."""
        super().__init__(parent)
        self.title = title
        self.setAcceptDrops(True)
        header = QLabel(f"<b>{title}</b>" + (f"<br><small>{note}</small>" if note else ""))
        header.setWordWrap(True)
        self.list = QListWidget()
        self.list.setSelectionMode(QListWidget.ExtendedSelection)
        self.list.setWordWrap(True)
        self.summary = QLabel()   # "1 usable · 5 cannot be used" once something is listed
        self.summary.setVisible(False)
        self.list.setToolTip("Drop files or DICOM folders here" if folders else
                             "Drop files here")
        add_files = QPushButton("Add files…")
        add_folder = self.add_folder_button = QPushButton("Add DICOM folder…")
        remove = QPushButton("Remove")
        add_files.clicked.connect(self._ask_files)
        add_folder.clicked.connect(self._ask_folder)
        remove.clicked.connect(self.remove_selected)
        buttons = QHBoxLayout()
        for button in (add_files, add_folder, remove):
            buttons.addWidget(button)
        add_folder.setVisible(folders)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addWidget(header)
        layout.addWidget(self.list)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        self._fit_height()

    def allow_folders(self, allowed: bool) -> None:
        """Offer "Add DICOM folder…" or not (label maps come as files, never as a series)."""
        self.add_folder_button.setVisible(allowed)

    def paths(self) -> list[Path]:
        return [Path(self.list.item(i).data(Qt.UserRole)) for i in range(self.list.count())]

    def set_paths(self, paths) -> None:
        self.list.clear()
        self.add_paths(paths)

    def add_paths(self, paths) -> None:
        known = {str(p) for p in self.paths()}
        for path in map(Path, paths):
            if str(path) in known:
                continue
            item = QListWidgetItem()
            item.setData(Qt.UserRole, str(path))
            self.list.addItem(item)
            self._show(item, READING, "")
        self._show_summary()
        self.changed.emit()

    # -- each entry's check ---------------------------------------------------------------------
    def set_status(self, path, status: str, reason: str = "") -> None:
        """Show `path`'s check: READING, GOOD or BAD (with the reason); ignored when the path
        is no longer listed (removed while it was being read)."""
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(Qt.UserRole) == str(path):
                self._show(item, status, reason)

    def status(self, path) -> str | None:
        item = self._item(path)
        return None if item is None else item.data(_STATUS_ROLE)

    def reason(self, path) -> str:
        item = self._item(path)
        return "" if item is None else (item.data(_REASON_ROLE) or "")

    def good_paths(self) -> list[Path]:
        return [p for p in self.paths() if self.status(p) == GOOD]

    def bad_paths(self) -> list[Path]:
        return [p for p in self.paths() if self.status(p) == BAD]

    def entry_text(self, path) -> str:
        item = self._item(path)
        return "" if item is None else item.text()

    def _item(self, path) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.UserRole) == str(path):
                return self.list.item(i)
        return None

    def _show(self, item: QListWidgetItem, status: str, reason: str) -> None:
        path = Path(item.data(Qt.UserRole))
        name = path.name + ("/" if path.is_dir() else "")
        item.setData(_STATUS_ROLE, status)
        item.setData(_REASON_ROLE, reason)
        short = reason.removeprefix(f"{path}: ").removeprefix(f"{path.name}: ")
        item.setText(f"{_MARK[status]} {name}" + (f": {short}" if short else ""))
        item.setToolTip(f"{path}\n{reason}" if reason else str(path))
        colour = _COLOUR.get(status)
        item.setForeground(QBrush(QColor(colour)) if colour else QBrush())
        self._show_summary()

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
        self._show_summary()
        self.changed.emit()

    def _fit_height(self) -> None:
        """As tall as its entries (one row when empty), at most MAX_LIST_HEIGHT px."""
        self.list.doItemsLayout()   # wrapped rows' heights at the list's current width
        rows = sum(self.list.visualItemRect(self.list.item(i)).height()
                   for i in range(self.list.count()))
        row = self.list.fontMetrics().height() + 6
        self.list.setFixedHeight(min(max(rows, row) + 2 * self.list.frameWidth() + 4,
                                     MAX_LIST_HEIGHT))

    def _show_summary(self) -> None:
        statuses = [self.list.item(i).data(_STATUS_ROLE) for i in range(self.list.count())]
        counts = {s: statuses.count(s) for s in (GOOD, BAD, READING)}
        parts = [f"{_MARK[GOOD]} {counts[GOOD]} usable"] if counts[GOOD] else []
        if counts[BAD]:
            parts.append(f"<span style='color:{_COLOUR[BAD]}'>{_MARK[BAD]} {counts[BAD]} "
                         "cannot be used (the reason is beside each)</span>")
        if counts[READING]:
            parts.append(f"{_MARK[READING]} {counts[READING]} being read")
        self.summary.setText("<small>" + " · ".join(parts) + "</small>")
        self.summary.setVisible(bool(statuses))
        self._fit_height()

    def _ask_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, f"Add {self.title.lower()}", "",
                                                VOLUME_FILTER)
        if files:
            self.add_paths(files)

    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a DICOM series folder")
        if folder:
            self.add_paths([folder])

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt name)
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            self.add_paths(paths)
            event.acceptProposedAction()
