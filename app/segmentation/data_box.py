"""The run's data: target volumes (required) and the optional inputs, each saying why.

Volumes are read off the GUI thread (:func:`app.worker.run_in_background`) and then shown, on
the GUI thread, as layers with their real spacing and orientation.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from uda_core.errors import UdaError
from uda_core.io.readers import read_labels, read_volume
from uda_core.methods.base import PAIRED_SOURCE, SOURCE_LABELLED, TARGET

from ..segmentation.mask_layers import MaskLayers
from ..widgets.file_list import FileList
from ..worker import run_in_background


def _read_all(kind: str, paths: list[Path]) -> list[tuple[int, Path, object]]:
    """Runs in a background thread: (index, path, Volume) per file; UdaError for a bad one."""
    reader = read_labels if kind == "labels" else read_volume
    return [(i, p, reader(p)) for i, p in enumerate(paths)]


class DataBox(QGroupBox):
    changed = Signal()
    failed = Signal(str)
    loaded = Signal()      # every pending read finished (tests and the scripted demo wait)

    def __init__(self, layers: MaskLayers, parent: QWidget | None = None):
        super().__init__("2  Data", parent)
        self.layers = layers
        self.targets = FileList("Target volumes", "unlabelled scans from the new scanner or "
                                "contrast (required)")
        self.paired = FileList("Paired source-modality images (optional)",
                               "the source-modality scan (e.g. T1w) of each target's subject, "
                               "same order; needed by ddm")
        self.source = FileList("Labelled source images (optional)",
                               "images with <name>_labels files beside them; needed by "
                               "adaptsegnet")
        self.reference = FileList("Reference labels (optional, evaluation only)",
                                  "tissue labels of the targets, same order: Dice is shown "
                                  "live, never used for training or for choosing")
        layout = QVBoxLayout(self)
        for files in (self.targets, self.paired, self.source, self.reference):
            layout.addWidget(files)
            files.changed.connect(self.changed)
        self.targets.changed.connect(lambda: self._read("targets"))
        self.reference.changed.connect(lambda: self._read("labels"))
        self._pending = 0

    def provided(self) -> set[str]:
        provided = set()
        if self.targets.paths():
            provided.add(TARGET)
        if self.paired.paths():
            provided.add(PAIRED_SOURCE)
        if self.source.paths():
            provided.add(SOURCE_LABELLED)
        return provided

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def _read(self, kind: str) -> None:
        paths = self.targets.paths() if kind == "targets" else self.reference.paths()
        if kind == "targets":
            self.layers.set_targets(paths)
        if paths:
            self._start(kind, paths, self._show_targets if kind == "targets"
                        else self._show_references)

    def show_final_masks(self, mask_paths) -> None:
        """Replace each live mask with the chosen checkpoint's mask written by the run."""
        if mask_paths:
            self._start("labels", [Path(p) for p in mask_paths], self._show_final)

    def _start(self, kind: str, paths: list[Path], on_done) -> None:
        self._pending += 1
        run_in_background(_read_all, kind, paths, on_returned=on_done,
                          on_errored=self._on_error, on_finished=self._on_finished,
                          name="uda-read-volumes")

    def _on_error(self, exc: Exception) -> None:
        self.failed.emit(str(exc) if isinstance(exc, UdaError) else
                         f"Could not read a volume: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self.loaded.emit()

    def _show_targets(self, items) -> None:
        for index, path, volume in items:
            self.layers.show_target(index, path, volume)
        self.layers.select(0)

    def _show_references(self, items) -> None:
        for index, _path, labels in items:
            self.layers.show_reference(index, labels)

    def _show_final(self, items) -> None:
        for index, _path, labels in items:
            self.layers.show_mask(index, labels.data.astype("uint8"), before=False)
        self.layers.select(0, "adapted")
