"""Saving a finished run's results where the user wants them.

The run itself already wrote everything atomically into its own folder (adapted.pt, masks/,
metrics.jsonl, run.json, report.png/md, checkpoints/); these buttons copy from there, asking
before anything is overwritten, and never write half a file (uda_core.io.atomic). A place
that cannot take the files (a full disk, a read-only or unwritable folder) gives one dialog
naming the folder and why (``failed``); the masks this save had added there are removed
again, and the buttons stay usable so that another folder can be chosen.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from qtpy.QtCore import QUrl, Signal
from qtpy.QtGui import QDesktopServices
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QMessageBox,
    QPushButton,
    QWidget,
)

from uda_core.errors import UdaError
from uda_core.io.atomic import atomic_output, output_error


def copy_atomic(source: Path, destination: Path) -> Path:
    """Copy one file; the destination appears complete or not at all. A place that cannot
    take it raises OutputError (one line naming the folder)."""
    with atomic_output(destination, overwrite=True) as tmp:
        shutil.copyfile(source, tmp)
    return destination


def copy_masks(mask_files: list[Path], folder: Path, confirm_overwrite) -> list[Path]:
    """Copy masks into `folder`; `confirm_overwrite(names) -> bool` is asked once when some
    exist already. Returns what was written (nothing when the user declined). When one copy
    fails, the masks this call added are removed again (the replaced ones are complete new
    copies) and the error is raised."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (output_error(exc, folder) or exc) from exc
    existing = [m.name for m in mask_files if (folder / m.name).exists()]
    if existing and not confirm_overwrite(existing):
        return []
    written = []
    try:
        for mask in mask_files:
            written.append(copy_atomic(mask, folder / mask.name))
    except BaseException:
        for path in written:
            if path.name not in existing:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    return written


def save_error_line(what: str, exc: Exception, folder: Path) -> str:
    """The dialog's one line for a failed save of `what` into `folder` (`exc`: an OSError or
    a UdaError such as io.atomic's OutputError, which names the folder)."""
    if isinstance(exc, OSError):
        exc = output_error(exc, folder) or exc
    reason = str(exc) if isinstance(exc, UdaError) else (
        f"{folder}: {getattr(exc, 'strerror', None) or exc}")
    return (f"Could not save the {what}: {reason}. No partial file was left; choose another "
            "folder.")


class SaveBox(QGroupBox):
    saved = Signal(str)     # a one-line message of what was written where
    failed = Signal(str)    # one line: what could not be saved where, and why

    def __init__(self, parent: QWidget | None = None):
        super().__init__("5  Save", parent)
        self.summary: dict | None = None
        self.model_button = QPushButton("Adapted model…")
        self.masks_button = QPushButton("Masks…")
        self.folder_button = QPushButton("Open run folder")
        self.model_button.clicked.connect(self._save_model)
        self.masks_button.clicked.connect(self._save_masks)
        self.folder_button.clicked.connect(self._open_folder)
        row = QHBoxLayout(self)
        for button in (self.model_button, self.masks_button, self.folder_button):
            row.addWidget(button)
        self.set_summary(None)

    def set_summary(self, summary: dict | None) -> None:
        """A finished run (None: none yet). When the run kept the source weights, the buttons
        say that what they save is the original model and its masks."""
        self.summary = summary
        original = bool(summary and summary.get("kept_source"))
        standardised = bool(summary and summary.get("standardised"))
        self.model_button.setText(
            "Original model + standardisation…" if original and standardised else
            "Original model (unchanged)…" if original else "Adapted model…")
        self.masks_button.setText("Masks of the original model…" if original else "Masks…")
        self.model_button.setToolTip(
            "No step improved on the original, so the run's model file holds the original "
            "weights (with a record of this run)" if original else
            "The adapted model bundle (adapted.pt) of this run")
        has_model = bool(summary and Path(summary.get("adapted_model", "")).is_file())
        self.model_button.setEnabled(has_model)
        self.masks_button.setEnabled(bool(summary and summary.get("masks")))
        self.folder_button.setEnabled(summary is not None)

    def run_dir(self) -> Path:
        return Path(self.summary["adapted_model"]).parent

    def _save_model(self) -> None:
        what = "original model" if self.summary.get("kept_source") else "adapted model"
        path, _ = QFileDialog.getSaveFileName(self, f"Save the {what}",
                                              "adapted.pt", "Model bundle (*.pt)")
        if not path:
            return
        try:  # the dialog itself asks before replacing an existing file
            copy_atomic(Path(self.summary["adapted_model"]), Path(path))
        except (OSError, UdaError) as exc:
            self.failed.emit(save_error_line(what, exc, Path(path).parent))
            return
        self.saved.emit(f"Saved the {what} to {path}")

    def _save_masks(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the masks")
        if not folder:
            return

        def confirm(names):
            answer = QMessageBox.question(
                self, "Replace files?",
                f"{len(names)} file(s) exist in {folder} (e.g. {names[0]}). Replace them?")
            return answer == QMessageBox.Yes

        try:
            written = copy_masks([Path(m) for m in self.summary["masks"]], Path(folder), confirm)
        except (OSError, UdaError) as exc:
            self.failed.emit(save_error_line("masks", exc, Path(folder)))
            return
        if written:
            self.saved.emit(f"Saved {len(written)} mask(s) to {folder}")
        else:   # declined: say so, so that an earlier "Saved ..." does not linger
            self.saved.emit(f"Masks not saved: you kept the files in {folder}")

    def _open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run_dir())))
