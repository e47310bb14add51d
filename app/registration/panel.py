"""The registration panel (npe2 widget `uda-studio.registration`): fixed, moving, optional
moving labels, a model or SimpleITK's baseline; Register, Cancel, Save; and, folded, "Adapt
to these scans" (:class:`app.registration.adapt_box.AdaptSection`: MCD on the fixed and
moving scans, as `uda reg adapt`, whose adapted model then replaces the chosen one).

Only wiring lives here. The run (:func:`app.registration.run.run_registration`) and the
saving (:func:`uda_core.runs.register.write_outputs`, shared with `uda reg apply`) happen
on background threads (:func:`app.worker.run_in_background`, as the adaptation panel's file
reads do); their results and errors reach the panel on the GUI thread.
Layers are added by :class:`app.registration.layers.RegistrationLayers` on the GUI thread.
"""

from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from uda_core.engine.device import DEVICE_CHOICES
from uda_core.errors import OutputError, UdaError
from uda_core.io.resources import resources_dir
from uda_core.models.bundle.builtins import BUILTIN_MODELS
from uda_core.runs.register import output_paths, write_outputs

from ..registration.adapt_box import AdaptSection
from ..registration.layers import RegistrationLayers, result_layers
from ..registration.run import (
    REFINE_3D_LABEL,
    RESAMPLE_LABEL,
    SITK,
    RegistrationRequest,
    run_registration,
)
from ..widgets.close_guard import guard_close
from ..widgets.file_list import VOLUME_FILTER
from ..worker import run_in_background

log = logging.getLogger(__name__)

DEMO_MODEL = "demo:reg-t1"
SITK_LABEL = "SimpleITK B-spline (baseline)"
MODEL_FILTER = "Registration bundles (*.pt *.pth);;All files (*)"
PANEL_MIN_WIDTH = 340   # px, as the adaptation panel's


def demo_model_installed() -> bool:
    return (resources_dir() / BUILTIN_MODELS[DEMO_MODEL][0]).is_file()


def similarity_line(outcome) -> str:
    """"Similarity to the fixed scan 1.021 -> 1.064 (mutual information, higher is
    better)": the moving scan before and the warped one after."""
    before = outcome.similarity_before.get("mutual_info", float("nan"))
    after = outcome.similarity_after.get("mutual_info", float("nan"))
    return (f"Similarity to the fixed scan {before:.3f} -> {after:.3f} (mutual information, "
            "higher is better)")


class FilePicker(QWidget):
    """One input file: an editable path and a browse (…) button."""

    def __init__(self, placeholder: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        browse = QPushButton("…")
        browse.setMaximumWidth(28)
        browse.setToolTip("Browse for a volume (NIfTI, MGZ, MHA/MHD, NRRD)")
        browse.clicked.connect(self._ask)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(browse)

    def path(self) -> Path | None:
        text = self.edit.text().strip()
        return Path(text) if text else None

    def set_path(self, path) -> None:
        self.edit.setText("" if path is None else str(path))

    def _ask(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a volume", "", VOLUME_FILTER)
        if path:
            self.set_path(path)


class RegistrationPanel(QWidget):
    """Register a moving scan onto a fixed one and show how it moved.

    Signals (tests and scripts wait on them): ``progressed(done, total)`` slices,
    ``registered(outcome)``, ``cancelled()``, ``failed(message)``, ``saved(paths)``.
    ``confirm(title, text) -> bool`` asks before replacing files (replaceable in tests).
    """

    progressed = Signal(int, int)
    registered = Signal(object)
    cancelled = Signal()
    failed = Signal(str)
    saved = Signal(list)

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layers = RegistrationLayers(napari_viewer)
        self.outcome = None
        self.confirm = self._ask_yes_no
        self._cancel = threading.Event()   # polled by the run between slices
        self._run = None                   # the BackgroundCall of the run under way
        self._refining_3d = False          # the run under way refines in 3D
        self._last_error_box = None

        self.fixed = FilePicker("fixed image (the reference grid)")
        self.moving = FilePicker("moving image (another scan or contrast)")
        self.moving_labels = FilePicker("optional: labels of the moving image")
        self.model = QComboBox()
        self.model.addItem(DEMO_MODEL, DEMO_MODEL)
        self.model.addItem(SITK_LABEL, SITK)
        if not demo_model_installed():
            self.model.model().item(0).setEnabled(False)
            self.model.setItemText(0, f"{DEMO_MODEL} (not installed)")
            self.model.setCurrentIndex(1)
        open_model = QPushButton("…")
        open_model.setMaximumWidth(28)
        open_model.setToolTip("Open a registration bundle (.pt), e.g. from `uda reg adapt`")
        open_model.clicked.connect(self._ask_model)
        self.device = QComboBox()
        self.device.addItems(list(DEVICE_CHOICES))
        self.device.setToolTip("Where the network runs; auto: the GPU when there is one")
        self.resample = QCheckBox(RESAMPLE_LABEL)
        self.resample.setChecked(True)   # scans of two sessions rarely share one grid
        self.resample.setToolTip("Untick to refuse a moving scan on another voxel grid "
                                 "instead of resampling it (trilinear; labels: nearest)")
        self.refine_3d = QCheckBox(REFINE_3D_LABEL)
        self.refine_3d.setChecked(True)   # as `uda reg apply`: --refine-3d auto
        self.refine_3d.setToolTip(
            "When the pair needed pre-alignment (scans of different subjects or grids), a 3D "
            "optimisation over the whole volume (MIND-SSC descriptors) follows the slice-wise "
            "registration and moves tissue across slices too: it raised the demo pairs' "
            "warped-label Dice from 0.58-0.70 to 0.78-0.82. About 30-60 s more for a head; "
            "dropped, with a note, when it lowers the similarity. Untick to skip it")
        self.register_button = QPushButton("Register")
        self.register_button.setStyleSheet("font-weight: bold")
        self.cancel_button = QPushButton("Cancel")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Write <stem>_warped, <stem>_labels_warped and "
                                    "<stem>_field (mm) .nii.gz on the fixed grid")
        self.progress = QProgressBar()
        self.progress.setFormat("ready")
        self.status = QLabel("Choose a fixed and a moving image, then press Register.")
        self.status.setWordWrap(True)
        self.warning = QLabel()   # the pair does not suit the model (after a run)
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #e8a33d")
        self.warning.setVisible(False)
        self.adapt = AdaptSection(self._adapt_inputs)
        self.adapt.confirm = lambda title, text: self.confirm(title, text)
        self._lay_out(open_model)

        self.register_button.clicked.connect(self.register)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._ask_save_folder)
        self.progressed.connect(self._on_progress)
        self.adapt.adapted.connect(self._on_adapted)
        self.adapt.failed.connect(self.show_error)
        self._close_guard = guard_close(napari_viewer, self, self.close_requested)
        self.adapt.running_changed.connect(lambda _: self._set_running(self.is_running))
        self._set_running(False)

    def _lay_out(self, open_model: QPushButton) -> None:
        form = QFormLayout()
        form.addRow("Fixed", self.fixed)
        form.addRow("Moving", self.moving)
        form.addRow("Moving labels", self.moving_labels)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(open_model)
        form.addRow("Model", model_row)
        form.addRow("Device", self.device)
        buttons = QHBoxLayout()
        for button in (self.register_button, self.cancel_button, self.save_button):
            buttons.addWidget(button)
        legend = QLabel("<small>Checkerboard: fixed and warped tiles. Arrows: where each "
                        "fixed voxel's content came from in the moving image. Jacobian: "
                        "blue shrinks, red grows; folds (det &le; 0) in magenta.</small>")
        legend.setWordWrap(True)
        content = QWidget()   # scrolls vertically when the adaptation section is open
        layout = QVBoxLayout(content)
        layout.addWidget(QLabel("<b>Registration</b>"))
        layout.addLayout(form)
        layout.addWidget(self.resample)
        layout.addWidget(self.refine_3d)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.warning)
        layout.addWidget(legend)
        layout.addWidget(self.adapt)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.scroll = scroll
        self.adapt.toggled.connect(lambda _: self._fit_width())
        self._fit_width()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Fit the width again once shown: the style and fonts of the window the panel
        lands in make its content wider than it measured when it was built (26 px at the
        app's 1280 x 800, cutting the right edge)."""
        super().showEvent(event)
        self._fit_width()

    def _fit_width(self) -> None:
        """As wide as the content needs plus the vertical scroll bar: the panel never
        scrolls sideways, so nothing may be cut on the right."""
        content = self.scroll.widget()
        content.adjustSize()
        self.setMinimumWidth(max(PANEL_MIN_WIDTH, content.minimumSizeHint().width()
                                 + self.scroll.verticalScrollBar().sizeHint().width()))

    # -- public actions (the buttons, the tests and the scripted demo) --------------------------
    @property
    def is_running(self) -> bool:
        """True from register() until the run's thread has ended and its outcome is
        delivered (False already in the slots of ``registered``, ``cancelled``, ``failed``)."""
        return self._run is not None and self._run.is_running

    def set_model(self, spec: str) -> None:
        """Choose "sitk", a built-in name or a bundle file (added to the list)."""
        index = self.model.findData(str(spec))
        if index < 0:
            self.model.addItem(Path(spec).name, str(spec))
            index = self.model.count() - 1
            self.model.setItemData(index, str(spec), Qt.ToolTipRole)
        self.model.setCurrentIndex(index)

    def load_demo(self) -> None:
        """The demo pair: T1 of sub-100 (fixed) and T1 of sub-101 with its labels (moving,
        another anatomy on the same 2 mm grid, the one contrast demo:reg-t1 was trained on),
        skull-stripped as it was trained; demo:reg-t1 when installed, else SimpleITK."""
        demo = resources_dir() / "demo" / "brains"
        self.fixed.set_path(demo / "t1" / "sub-100_t1.nii.gz")
        self.moving.set_path(demo / "t1" / "sub-101_t1.nii.gz")
        self.moving_labels.set_path(demo / "t1" / "sub-101_labels.nii.gz")
        self.resample.setChecked(True)
        self.set_model(DEMO_MODEL if demo_model_installed() else SITK)

    def request(self) -> RegistrationRequest | None:
        """The run the inputs describe; None (with a message) when one is missing."""
        fixed, moving = self.fixed.path(), self.moving.path()
        if fixed is None or moving is None:
            self.show_error("Choose a fixed and a moving image first.")
            return None
        model = self.model.currentData()
        return RegistrationRequest(fixed, moving, self.moving_labels.path(), model,
                                   self.device.currentText(), self.resample.isChecked(),
                                   self.refine_3d.isChecked())

    def register(self) -> bool:
        """Start a run in the background; False when one (or an adaptation) is going or
        inputs are missing."""
        if self.is_running or self.adapt.is_running:
            return False
        request = self.request()
        if request is None:
            return False
        self._cancel.clear()
        self._refining_3d = request.refine_3d
        self._set_running(True)
        self.warning.setVisible(False)
        self.progress.setRange(0, 0)  # busy until the first slice is done
        self.status.setText(f"Registering {request.moving.name} onto {request.fixed.name}…")
        self._run = run_in_background(
            run_registration, request, self._report_progress, self._cancel.is_set,
            result_layers, on_returned=self._on_registered, on_errored=self._on_run_error,
            on_finished=self._on_run_finished, name="uda-registration")
        return True

    def cancel(self) -> None:
        """Stop the run after the slice in progress (and an adaptation after its step)."""
        self.adapt.stop()
        if self.is_running:
            self._cancel.set()
            self.status.setText("Cancelling…")

    def wait(self, timeout_s: float = 60.0) -> bool:
        """Block until the run's (and an adaptation's) thread has ended (e.g. before
        closing); True when it has or none runs. Outcomes may still be queued for the GUI
        thread."""
        registered = self._run is None or self._run.wait(int(timeout_s * 1000))
        return self.adapt.wait(timeout_s) and registered

    def save_to(self, folder) -> bool:
        """Write the last result into ``folder`` in the background (asks before replacing
        files; refuses to write an input). False when nothing is to be written."""
        if self.outcome is None:
            self.show_error("Nothing to save yet: register a pair first.")
            return False
        request, result = self.outcome.request, self.outcome.result
        targets = output_paths(Path(folder), request.moving, result.labels_warped is not None)
        inputs = [p.resolve() for p in request.inputs()]
        clash = [p for p in targets.values() if p.resolve() in inputs]
        if clash:
            self.show_error(f"{clash[0]}: is an input of this registration; refusing to "
                            "overwrite it. Choose another folder.")
            return False
        existing = [p for p in targets.values() if p.exists()]
        if existing and not self.confirm(
                "Replace files?", "These files exist already:\n"
                + "\n".join(str(p) for p in existing) + "\nReplace them?"):
            self.status.setText("Not saved: the existing files were kept.")
            return False
        self.save_button.setEnabled(False)
        run_in_background(write_outputs, result, targets, request.inputs(), existing,
                          on_returned=self._on_saved, on_errored=self._on_save_error,
                          name="uda-save-registration")
        return True

    def show_error(self, message: str, details: str = "") -> None:
        """One readable, non-blocking dialog and a log entry; the panel stays usable."""
        log.error("%s%s", message, f"\n{details}" if details else "")
        self.status.setText(message)
        if self._last_error_box is not None:
            self._last_error_box.close()
        box = QMessageBox(QMessageBox.Warning, "UDA Studio: registration", message,
                          QMessageBox.Ok, self)
        if details:
            box.setDetailedText(details)
        box.open()
        self._last_error_box = box
        self.failed.emit(message)

    # -- reactions ------------------------------------------------------------------------------
    def _report_progress(self, done: int, total: int) -> None:
        """Called on the run's thread: the signal is queued to the GUI thread."""
        try:
            self.progressed.emit(done, total)
        except RuntimeError:  # the panel is gone (viewer closed): stop the run
            self._cancel.set()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat("%v / %m: slices, then any 3D steps" if self._refining_3d
                                else "%v / %m slices")

    def _on_registered(self, outcome) -> None:
        self.outcome = outcome
        self.layers.show(outcome)
        result = outcome.result
        what = "SimpleITK B-spline" if result.method == "sitk" else Path(
            outcome.request.model).name
        where = "head voxels (3D)" if "after_3d" in result.similarity else "head pixels"
        # the core's notes (pre-alignment, 3D refinement, do-no-harm decisions), one a line
        notes = "".join(f"\n• {note}" for note in result.notes)
        self.status.setText(f"{what}: {result.slices} slices in {result.seconds:.1f} s. "
                            f"{similarity_line(outcome)}; folding "
                            f"{100 * result.folding:.2f} % of {where}.{notes}")
        warnings = [outcome.warning] if outcome.warning else []
        if result.fallback:
            warnings.append("The learned deformation lowered the similarity of the scans: "
                            "the pre-aligned result is shown instead. Adapt the model to these "
                            "scans (below) or try the SimpleITK baseline.")
        self.warning.setText("\n".join(warnings))
        self.warning.setVisible(bool(warnings))
        for line in warnings:
            log.warning("%s", line)
        self.registered.emit(outcome)

    def _on_run_error(self, exc: Exception) -> None:
        if self._cancel.is_set() and isinstance(exc, UdaError) and str(exc) == "cancelled":
            self.status.setText("Cancelled; the previous result (if any) is kept.")
            self.cancelled.emit()
        elif isinstance(exc, UdaError):
            self.show_error(str(exc))
        else:
            self.show_error(f"Registration failed: {type(exc).__name__}: {exc}",
                            "".join(traceback.format_exception(exc)))

    def _on_run_finished(self) -> None:
        self._set_running(False)

    def _adapt_inputs(self):
        """(model, fixed, moving, device) for the adaptation section, or None (said why)."""
        if self.is_running:
            return None
        fixed, moving = self.fixed.path(), self.moving.path()
        model = self.model.currentData()
        if fixed is None or moving is None:
            self.show_error("Choose a fixed and a moving image first: the adaptation learns "
                            "from them.")
            return None
        if model == SITK:
            self.show_error("Choose a registration model to adapt: SimpleITK's baseline "
                            "has nothing to learn.")
            return None
        return model, fixed, moving, self.device.currentText()

    def _on_adapted(self, summary: dict) -> None:
        """The adapted model replaces the chosen one: Register applies it."""
        self.set_model(summary["adapted_model"])
        item = self.model.currentIndex()
        self.model.setItemText(item, f"adapted: {Path(summary['adapted_model']).parent.name}")

    def _on_saved(self, paths: list) -> None:
        self.save_button.setEnabled(True)
        folder = paths[0].parent if paths else ""
        self.status.setText(f"Saved {len(paths)} files to {folder}.")
        self.saved.emit(list(paths))

    def _on_save_error(self, exc: Exception) -> None:
        """One dialog; a place that cannot take the files (OutputError: full, read-only)
        asks for another folder (write_outputs left no partial set there)."""
        self.save_button.setEnabled(True)
        if isinstance(exc, OutputError):
            message = (f"Could not save: {exc}. No partial file was left; choose another "
                       "folder.")
        elif isinstance(exc, UdaError):
            message = str(exc)
        else:
            message = f"Could not save: {type(exc).__name__}: {exc}"
        self.show_error(message)

    def _set_running(self, running: bool) -> None:
        adapting = self.adapt.is_running
        self.register_button.setEnabled(not running and not adapting)
        self.adapt.start_button.setEnabled(not running and not adapting)
        self.cancel_button.setEnabled(running)
        self.save_button.setEnabled(not running and self.outcome is not None)
        if not running:
            self.progress.setRange(0, max(self.progress.maximum(), 1))
            if self.progress.format() != "%v / %m slices":
                self.progress.setFormat("ready")

    def _ask_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a registration model", "",
                                              MODEL_FILTER)
        if path:
            self.set_model(path)

    def _ask_save_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the registration into")
        if folder:
            self.save_to(folder)

    def close_requested(self) -> bool:
        """True when the window may close: asks first while an adaptation is going, then
        stops it (it writes its folder) and waits for it."""
        if not self.adapt.is_running:
            return True
        if not self.confirm("Stop the adaptation?", "A registration adaptation is running. "
                            "Stop it and close? Its last checkpoint is kept."):
            return False
        self.adapt.stop()
        self.adapt.wait(30.0)
        return True

    def _ask_yes_no(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.Yes
