"""The registration panel's folded "Adapt to these scans" section: MCD (pemd, swd or l1) on
the panel's fixed and moving scans, with Start/Stop, progress, live curves (MCD's loss terms
above, the label-free scores below), the warp of one training pair refreshed during the run,
and Save.

Only widgets and wiring: the run is :class:`app.registration.adapt.RegAdaptRequest` on an
:class:`app.worker.RunController` (the adaptation panel's worker; Stop is the engine's
cancellation: the run ends before its next step and still writes its folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from ..widgets.collapsible import Collapsible
from ..widgets.plots import LiveCurves
from ..worker import DEFAULT_RUNS_DIR, RunController, format_eta, new_run_dir
from .adapt import (
    DEFAULT_STEPS,
    DISCREPANCY_CHOICES,
    RegAdaptRequest,
    preview_picture,
    save_adapted,
)

PREVIEW_HEIGHT_PX = 120   # the warped | checkerboard picture's height in the panel
CURVES_HEIGHT_PX = 300    # both plots, their legends and the tick boxes


def _pixmap(picture: np.ndarray) -> QPixmap:
    """A grey (rows, columns) 0..1 picture as a pixmap."""
    grey = np.ascontiguousarray((np.clip(picture, 0, 1) * 255).astype(np.uint8))
    image = QImage(grey.data, grey.shape[1], grey.shape[0], grey.strides[0],
                   QImage.Format_Grayscale8)
    return QPixmap.fromImage(image.copy())


class AdaptSection(Collapsible):
    """Signals: ``adapted(summary)`` once a run has written its adapted model (also after
    Stop past the first step), ``stopped(message)`` (Stop before the first step: nothing
    written), ``failed(message, details)``, ``saved(path)``, ``running_changed(bool)``.
    ``confirm(title, text) -> bool`` asks before replacing a file (replaceable in tests);
    ``runs_root``: where each run's folder is made."""

    adapted = Signal(dict)
    stopped = Signal(str)
    failed = Signal(str, str)   # one-line message, details ("" when none)
    saved = Signal(str)
    running_changed = Signal(bool)

    def __init__(self, inputs, parent: QWidget | None = None):
        """``inputs() -> (model, fixed, moving, device) | None`` gives the panel's choices
        (None: something is missing and the panel has said so)."""
        super().__init__("Adapt to these scans", open_=False,
                         tooltip="Adapt the registration model to the contrast of these "
                                 "scans without labels (MCD, as `uda reg adapt`)", parent=parent)
        self.inputs = inputs
        self.controller = RunController(self)
        self.summary: dict | None = None
        self.runs_root = DEFAULT_RUNS_DIR
        self.confirm = None   # set by the panel (its yes/no dialog)

        self.method = QComboBox()
        for value, label in DISCREPANCY_CHOICES:
            self.method.addItem(label, value)
        self.method.setToolTip("How the two heads' disagreement is measured on the moving "
                               "scans: pemd (projected EMD, the best on the benchmark, "
                               "BENCHMARKS.md), swd (sliced Wasserstein), l1 (classic MCD)")
        self.steps = QSpinBox()
        self.steps.setRange(1, 100_000)
        self.steps.setValue(DEFAULT_STEPS)
        self.steps.setToolTip(f"MCD steps ({DEFAULT_STEPS} as `uda reg adapt`: minutes on a "
                              "CPU; the progress bar shows the time left)")
        self.start_button = QPushButton("Start")
        self.start_button.setStyleSheet("font-weight: bold")
        self.stop_button = QPushButton("Stop")
        self.save_button = QPushButton("Save model…")
        self.save_button.setToolTip("Copy the adapted registration bundle (adapted.pt) where "
                                    "you choose; it asks before replacing a file")
        self.progress = QProgressBar()
        self.progress.setFormat("ready")
        self.progress.setValue(0)
        self.status = QLabel("Adapts the model to the contrast of the moving scan (no labels "
                             "needed); then Register uses the adapted model.")
        self.status.setWordWrap(True)
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignCenter)
        self.preview.setToolTip("One training pair during the run: the warped moving slice "
                                "(left) and the checkerboard of fixed and warped tiles (right)")
        self.preview.setVisible(False)
        self.curves = LiveCurves()
        self.curves.setFixedHeight(CURVES_HEIGHT_PX)
        # as wide as the panel gives, never wider (the panel does not scroll sideways)
        self.curves.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        self.curves.setVisible(False)
        self._lay_out()

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self._ask_save)
        c = self.controller
        c.stepped.connect(self._on_step)
        c.scored.connect(self._on_scores)
        c.previewed.connect(self._on_preview)
        c.finished.connect(self._on_finished)
        c.failed.connect(self._on_failed)
        c.stopped.connect(self._on_stopped)
        c.status.connect(self.status.setText)
        c.running_changed.connect(self._set_running)
        c.running_changed.connect(self.running_changed)
        self._set_running(False)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow("Steps", self.steps)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.stop_button, self.save_button):
            buttons.addWidget(button)
        self.content.addLayout(form)
        self.content.addLayout(buttons)
        self.content.addWidget(self.progress)
        self.content.addWidget(self.status)
        self.content.addWidget(self.preview)
        self.content.addWidget(self.curves)

    # -- public actions -------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.controller.is_running

    def start(self) -> bool:
        """Start a run on the panel's scans; False when one runs or inputs are missing."""
        if self.is_running:
            return False
        chosen = self.inputs()
        if chosen is None:
            return False
        model, fixed, moving, device = chosen
        discrepancy = self.method.currentData()
        request = RegAdaptRequest(model, [str(fixed)], [str(moving)],
                                  new_run_dir(f"reg-mcd-{discrepancy}", Path(self.runs_root)),
                                  discrepancy=discrepancy, steps=self.steps.value(),
                                  device=device)
        self.summary = None
        self.curves.clear()
        self.curves.setVisible(True)
        self.preview.clear()
        self.progress.setRange(0, 0)   # busy until the first step
        self.controller.start(request)
        return True

    def stop(self) -> None:
        """Cancel: the run stops before its next step and writes what it has."""
        if self.is_running:
            self.controller.stop()
            self.status.setText("Stopping after this step…")

    def wait(self, timeout_s: float = 60.0) -> bool:
        return self.controller.wait(int(timeout_s * 1000))

    def save_to(self, path) -> bool:
        """Copy the adapted model to ``path`` (asks before replacing a file)."""
        if self.summary is None:
            return False
        path = Path(path)
        exists = path.exists()
        if exists and not (self.confirm and self.confirm(
                "Replace file?", f"{path} exists already. Replace it?")):
            self.status.setText(f"Not saved: {path.name} was kept.")
            return False
        try:
            save_adapted(self.summary, path, overwrite=exists)
        except OSError as exc:
            self.status.setText(f"Could not save {path}: {exc}")
            self.failed.emit(f"Could not save {path}: {exc}", "")
            return False
        self.status.setText(f"Saved the adapted model to {path}.")
        self.saved.emit(str(path))
        return True

    # -- reactions ------------------------------------------------------------------------------
    def _on_step(self, event) -> None:
        self.curves.add_losses(event.step, event.losses)
        self.progress.setRange(0, max(event.total, 1))
        self.progress.setValue(event.step)
        eta = event.elapsed_s / max(event.step, 1) * (event.total - event.step)
        self.progress.setFormat(f"step %v / %m   ETA {format_eta(eta)}")

    def _on_scores(self, event) -> None:
        self.curves.add_scores(event.step, event.scores, event.reference, event.is_best,
                               selection=event.selection)

    def _on_preview(self, event) -> None:
        if not hasattr(event, "warped"):
            return
        pixmap = _pixmap(preview_picture(event))
        self.preview.setPixmap(pixmap.scaledToHeight(PREVIEW_HEIGHT_PX,
                                                     Qt.SmoothTransformation))
        self.preview.setVisible(True)
        self.preview.setToolTip(f"Step {event.step}: warped moving slice (left), "
                                "checkerboard of fixed and warped (right)")

    def _on_finished(self, summary: dict) -> None:
        self.summary = summary
        self.save_button.setEnabled(True)
        chosen = summary.get("chosen_step")
        if chosen is not None:
            self.curves.mark_chosen(chosen)
        done = summary.get("steps_done", 0)
        how = "stopped" if summary.get("status") == "cancelled" else "finished"
        kept = ("kept the original weights (no step improved the label-free score)"
                if summary.get("kept_source") else f"kept step {chosen}")
        self.status.setText(f"Adaptation {how} after {done} steps; {kept}. Register now "
                            "uses the adapted model.")
        self.adapted.emit(summary)

    def _on_failed(self, message: str, details: str) -> None:
        self.status.setText(f"Adaptation failed: {message}")
        self.failed.emit(message, details)   # the panel shows and logs it

    def _on_stopped(self, message: str) -> None:
        # the core's own sentence: "stopped while <doing>, before any adaptation step: ..."
        self.status.setText(message[:1].upper() + message[1:] + ".")
        self.stopped.emit(message)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.method.setEnabled(not running)
        self.steps.setEnabled(not running)
        self.save_button.setEnabled(not running and self.summary is not None)
        if not running and self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the adapted registration model", "adapted-reg.pt",
            "Registration bundle (*.pt)", options=QFileDialog.DontConfirmOverwrite)
        if path:
            self.save_to(path)
