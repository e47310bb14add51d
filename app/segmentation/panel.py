"""The UDA Studio panel: model, data, method, run, save; live curves in a second dock.

This widget only wires things together. Files are read off the GUI thread (the data box, with
:func:`app.worker.run_in_background`); the adaptation runs on the thread of an
:class:`app.worker.RunController` and reaches the GUI only through signals; layers are changed
only on the GUI thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QMessageBox, QScrollArea, QVBoxLayout, QWidget

from ..segmentation.data_box import DataBox
from ..segmentation.mask_layers import MaskLayers
from ..segmentation.method_box import MethodBox
from ..segmentation.model_box import ModelBox
from ..segmentation.run_box import RunBox, record_speed
from ..segmentation.save_box import SaveBox
from ..widgets.plots import LiveCurves
from ..worker import RunController, RunRequest
from uda_core.synth.demo_files import demo_set

log = logging.getLogger(__name__)

GUI_PREVIEW_EVERY = 25   # steps between mask refreshes (each costs one volume's prediction)


class UdaPanel(QWidget):
    """The napari dock widget (npe2 command `uda-studio.panel`)."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layers = MaskLayers(napari_viewer)
        self.controller = RunController(self)
        self.summary: dict | None = None
        self.progress_bar = None   # napari's activity-dock progress of the current run
        self.confirm = self._ask_yes_no  # replaced in tests

        self.model_box = ModelBox()
        self.data_box = DataBox(self.layers)
        self.method_box = MethodBox()
        self.method_box.set_engine_defaults({"preview_every": GUI_PREVIEW_EVERY})
        self.run_box = RunBox()
        self.save_box = SaveBox()
        self.curves = LiveCurves()

        content = QWidget()
        column = QVBoxLayout(content)
        for box in (self.model_box, self.data_box, self.method_box, self.run_box,
                    self.save_box):
            column.addWidget(box)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self.setMinimumWidth(380)

        self._initial_scores: dict = {}   # the current run's step-0 label-free scores
        self.model_box.model_changed.connect(self._refresh_availability)
        self.model_box.model_changed.connect(self.data_box.set_model)
        self.method_box.method_changed.connect(self._refresh_estimate)
        self.method_box.engine_form.changed.connect(self._refresh_estimate)
        self.run_box.device.currentTextChanged.connect(self._refresh_estimate)
        self.model_box.failed.connect(self.show_error)
        self.data_box.changed.connect(self._refresh_availability)
        self.data_box.failed.connect(self.show_error)
        self.run_box.start_clicked.connect(self.start)
        self.run_box.pause_clicked.connect(self._pause)
        self.run_box.stop_clicked.connect(self.stop)
        self.save_box.saved.connect(self.run_box.status.setText)
        self._connect_controller()
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._curves_dock = None
        self._dock_curves()
        self._watch_close()
        self._refresh_availability()
        self._refresh_estimate()

    # -- set-up -------------------------------------------------------------------------------
    def _dock_curves(self) -> None:
        window = getattr(self.viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            self._curves_dock = window.add_dock_widget(
                self.curves, name="UDA Studio: live curves", area="bottom")

    def _watch_close(self) -> None:
        qt_window = getattr(getattr(self.viewer, "window", None), "_qt_window", None)
        if qt_window is not None:
            self._close_filter = _CloseFilter(self)
            qt_window.installEventFilter(self._close_filter)

    def _connect_controller(self) -> None:
        c = self.controller
        c.stepped.connect(self._on_step)
        c.scored.connect(self._on_scores)
        c.previewed.connect(self._on_preview)
        c.rolled_back.connect(self._on_rollback)
        c.finished.connect(self._on_finished)
        c.failed.connect(self._on_failed)
        c.stopped.connect(self._on_stopped)
        c.status.connect(self._show_run_status)

    # -- public actions (also used by the scripted demo and the tests) -------------------------
    def load_demo(self, domain: str = "t2") -> None:
        """The built-in demo: demo:brain-t1, the shifted domain's targets, their T1 scans
        (paired source for ddm) and reference labels (evaluation only)."""
        demo = demo_set(domain)
        self.model_box.load("demo:brain-t1")
        self.data_box.targets.set_paths(demo.targets)
        self.data_box.paired.set_paths(demo.paired)
        self.data_box.reference.set_paths(demo.reference)
        self.method_box.select("ddm" if domain == "t2" else "sfda")

    def start(self) -> bool:
        """Check the inputs and start a run in the background; False (with a message) when
        something is missing."""
        if self.controller.is_running:
            return False
        problem = self._start_problem()
        if problem:
            self.show_error(problem)
            return False
        try:
            method_settings = self.method_box.method_settings()
            engine_settings = self.method_box.engine_settings()
        except ValueError as exc:
            self.show_error(str(exc))
            return False
        method = self.method_box.method
        out_dir = self.run_box.output_dir(method)
        overwrite = False
        if (out_dir / "adapted.pt").exists():
            if not self.confirm("Replace results?",
                                f"{out_dir} already holds a run's results. Replace them?"):
                return False
            overwrite = True
        inputs = self.data_box.run_inputs()
        request = RunRequest(
            model=self.model_box.spec, method=method, targets=inputs.targets,
            out_dir=out_dir, paired=inputs.paired, source=inputs.source,
            reference=inputs.reference, method_settings=method_settings,
            engine_settings=engine_settings, device=self.run_box.device.currentText(),
            overwrite=overwrite, standardise=self.method_box.standardise.isChecked())
        self.curves.clear()
        self.summary = None
        self._initial_scores = {}
        self.save_box.set_summary(None)
        self.run_box.reset_progress()
        run_name = self.layers.begin_run(method, inputs.targets)
        self._on_active_layer()
        self._start_activity_progress(engine_settings.get("steps", 0), method)
        self.controller.start(request)
        self.run_box.set_running(True)
        self._run_note = self._start_message(run_name, inputs, out_dir)
        self.run_box.status.setText(self._run_note)
        return True

    def _show_run_status(self, message: str) -> None:
        """The worker's phase ("Loading data…") with what this run is on and skips."""
        self.run_box.status.setText(f"{message} {getattr(self, '_run_note', '')}".strip())

    @staticmethod
    def _start_message(run_name: str, inputs, out_dir: Path) -> str:
        n = len(inputs.targets)
        text = f"{run_name.capitalize()} on {n} scan{'s' * (n != 1)}; results in {out_dir}"
        if inputs.skipped:
            text += (f". Skipping {len(inputs.skipped)}: " + "; ".join(inputs.skipped))
        return text

    def stop(self) -> None:
        self.controller.stop()
        self.run_box.status.setText("Stopping…")

    def show_error(self, message: str, details: str = "") -> None:
        """A readable, non-blocking dialog and a log entry; the app stays alive."""
        log.error("%s%s", message, f"\n{details}" if details else "")
        self.run_box.status.setText(message)
        box = QMessageBox(QMessageBox.Warning, "UDA Studio", message, QMessageBox.Ok, self)
        if details:
            box.setDetailedText(details)
        box.open()
        self._last_error_box = box

    # -- reactions to the run ------------------------------------------------------------------
    def _start_problem(self) -> str:
        if self.model_box.bundle is None:
            return "Choose a model first (step 1)."
        targets = self.data_box.targets
        if not targets.paths():
            return "Add at least one target volume (step 2)."
        reading = self.data_box.reading()
        if reading:
            return (f"Still reading {len(reading)} file(s) (e.g. {reading[0].name}); press Start "
                    "again in a moment.")
        inputs = self.data_box.run_inputs()
        if not inputs.targets:
            return ("None of the target volumes can be used: " + "; ".join(inputs.skipped)
                    + ".")
        reason = self.method_box.unavailable_reason()
        if reason:
            return f"Cannot start: {reason}."
        if self.data_box.paired.paths() and (len(self.data_box.paired.paths())
                                             != len(self.data_box.targets.paths())):
            return "Give one paired source image per target volume, in the same order."
        return ""


    def _start_activity_progress(self, total: int, method: str) -> None:
        try:
            from napari.utils import progress
        except ImportError:  # pragma: no cover - napari is a dependency of the app
            return
        self.progress_bar = progress(total=max(int(total), 1), desc=f"UDA Studio: {method}")

    def _close_activity_progress(self) -> None:
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None

    def _on_step(self, event) -> None:
        self.curves.add_losses(event.step, event.losses)
        self.run_box.show_progress(event.step, event.total, event.elapsed_s)
        if self.progress_bar is not None:
            self.progress_bar.update(event.step - self.progress_bar.n)

    def _on_scores(self, event) -> None:
        if event.step == 0:
            self._initial_scores = dict(event.scores)
        self.curves.add_scores(event.step, event.scores, event.reference, event.is_best)

    def _on_rollback(self, event) -> None:
        self.curves.mark_rollback(event.step, event.to_step)
        self.run_box.status.setText(f"Step {event.step}: {event.reason}; rolled back to step "
                                    f"{event.to_step} with a smaller learning rate")

    def _on_preview(self, event) -> None:
        if event.input_labels is not None:
            self.layers.show_mask(event.volume_index, event.input_labels, before=event.step == 0)
            if event.step == 0:
                self.layers.show_mask(event.volume_index, event.input_labels, before=False)

    def _on_finished(self, summary: dict) -> None:
        self.summary = summary
        self.run_box.set_running(False)
        self._close_activity_progress()
        chosen = summary.get("chosen_step")
        if chosen is not None:
            self.curves.mark_chosen(chosen)
        self.data_box.show_final_masks(summary.get("masks", []))
        self.save_box.set_summary(summary)
        if summary.get("steps_done") and summary.get("status") != "cancelled":
            record_speed(summary.get("method", ""), self.run_box.device.currentText(),
                         float(summary.get("steps_per_second") or 0))
            self._refresh_estimate()
        self.run_box.status.setText(outcome_text(summary, self._initial_scores))

    def _on_failed(self, message: str, details: str) -> None:
        self.run_box.set_running(False)
        self._close_activity_progress()
        self.show_error(message, details)

    def _on_stopped(self, message: str) -> None:
        """Stop before the first step: nothing was adapted; no dialog, just the fact."""
        self.run_box.set_running(False)
        self._close_activity_progress()
        self.run_box.reset_progress("stopped")
        self.run_box.status.setText(f"Stopped: {message}.")

    def _refresh_estimate(self, *_) -> None:
        try:
            steps = int(self.method_box.engine_settings().get("steps", 0))
        except (TypeError, ValueError):
            return
        self.run_box.show_estimate(steps, self.method_box.method)

    def _pause(self, paused: bool) -> None:
        (self.controller.pause if paused else self.controller.resume)()
        self.run_box.status.setText("Paused." if paused else "Running…")

    def _on_active_layer(self, event=None) -> None:
        index = self.layers.run_index_of_layer(self.viewer.layers.selection.active)
        if index is not None:
            self.controller.set_preview_index(index)

    def _refresh_availability(self, *_) -> None:
        self.method_box.update_availability(self.model_box.bundle, self.data_box.provided())

    # -- closing -------------------------------------------------------------------------------
    def close_requested(self) -> bool:
        """True when the window may close: asks first while a run is going, then stops it."""
        if not self.controller.is_running:
            return True
        if not self.confirm("Stop the run?", "An adaptation is running. Stop it and close? "
                            "Its last checkpoint is kept."):
            return False
        self.controller.stop()
        self.controller.wait(30_000)
        return True

    def _ask_yes_no(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.Yes


def outcome_text(summary: dict, initial_scores: dict) -> str:
    """The run's outcome in plain words: whether the model changed, which step was chosen
    and its label-free score against step 0's, and where the results are."""
    chosen, score = summary.get("chosen_step"), summary.get("selected_by", "")
    where = f" Results in {Path(summary['adapted_model']).parent}."
    stopped = (f"Stopped after {summary.get('steps_done')} steps. "
               if summary.get("status") == "cancelled" else "")
    if summary.get("status") == "cancelled":
        where += " Masks were not written (stopped): save the model, or run again."
    if summary.get("kept_source") and summary.get("standardised"):
        return (f"{stopped}No weight changed: the model is the original one, applied to "
                f"standardised intensities ({summary.get('outcome', '')}).{where}")
    if summary.get("kept_source"):
        return (f"{stopped}No improvement found: the adapted model equals the original "
                f"({summary.get('outcome', '')}).{where}")
    if score == "last":
        return f"{stopped}Adapted: kept step {chosen}, the last good weights.{where}"
    before = initial_scores.get(score)
    after = (summary.get("chosen_scores") or {}).get(score)
    change = (f", label-free score ({score}) {before:.3g} -> {after:.3g}"
              if before is not None and after is not None else "")
    return f"{stopped}Adapted: chosen step {chosen}{change}.{where}"


class _CloseFilter(QObject):
    """Intercepts the main window's close event to ask about a running adaptation."""

    def __init__(self, panel: UdaPanel):
        super().__init__(panel)
        self.panel = panel

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Close and not self.panel.close_requested():
            event.ignore()
            return True
        return False
