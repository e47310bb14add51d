"""A titled list of input files (volumes or DICOM folders) with Add, Remove and drag and drop."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt, Signal
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

VOLUME_FILTER = ("Volumes (*.nii *.nii.gz *.mgz *.mgh *.mha *.mhd *.nrrd *.nhdr);;"
                 "All files (*)")


class FileList(QWidget):
    """One kind of input (e.g. "Target volumes"); `note` says why it is needed or optional."""

    changed = Signal()

    def __init__(self, title: str, note: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self.setAcceptDrops(True)
        header = QLabel(f"<b>{title}</b>" + (f"<br><small>{note}</small>" if note else ""))
        header.setWordWrap(True)
        self.list = QListWidget()
        self.list.setSelectionMode(QListWidget.ExtendedSelection)
        self.list.setMaximumHeight(78)
        self.list.setToolTip("Drop files or DICOM folders here")
        add_files = QPushButton("Add files…")
        add_folder = self.add_folder_button = QPushButton("Add DICOM folder…")
        remove = QPushButton("Remove")
        add_files.clicked.connect(self._ask_files)
        add_folder.clicked.connect(self._ask_folder)
        remove.clicked.connect(self.remove_selected)
        buttons = QHBoxLayout()
        for button in (add_files, add_folder, remove):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.addWidget(header)
        layout.addWidget(self.list)
        layout.addLayout(buttons)

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
            item = QListWidgetItem(path.name + ("/" if path.is_dir() else ""))
            item.setData(Qt.UserRole, str(path))
            item.setToolTip(str(path))
            self.list.addItem(item)
        self.changed.emit()

    def remove_selected(self) -> None:
        for item in self.list.selectedItems():
            self.list.takeItem(self.list.row(item))
        self.changed.emit()

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
