"""The UDA Studio panel: model, data, method, run, save; live curves in a second dock.

Layout (fits a 1280 x 800 window, no horizontal scrolling): a scrolling column with the model,
the scans (optional inputs folded), the method (its advanced settings folded), and below it,
always in view, the action bar: one large Adapt button with Pause and Stop, the progress bar,
the status line, a single quality line and the Save buttons. The live curves dock is shown
from a run's start on, at a quarter of the window's height.

This widget only wires things together. Files are read off the GUI thread (the data box, with
:func:`app.worker.run_in_background`); the adaptation runs on the thread of an
:class:`app.worker.RunController` and reaches the GUI only through signals; layers are changed
only on the GUI thread.

Speed (BENCHMARKS.md, "The whole app against `uda adapt`"): the window must repaint as
little as it can while a run trains. Under Xvfb (and on any machine without a GPU driver) the
napari canvas is an OpenGL widget drawn by Mesa's llvmpipe, and a window holding one
composites the whole window through it on every repaint, on the CPU cores the run trains on
and holding the GIL, which the run's thread needs between its torch calls. A napari
``progress`` animates an "in progress" indicator in the status bar (about 15 repaints a
second), so the panel shows progress in its own bar only; that bar and the curves are redrawn
together, in one repaint, at most once every GUI_REFRESH_MS however fast steps come (the bar
never repaints at once, and the curves' step axis is fixed at the run's length so a redraw
leaves it as it was: pyqtgraph paints axes in Python, holding the GIL). A method
is given only the optional inputs it uses (``needs`` and ``optional_needs``): paired scans
given for ddm are not co-registered and batched for sfda. A run's mask layers are added, empty,
before its worker starts (:meth:`MaskLayers.prepare_run`): adding napari layers at the step-0
previews held the GIL for over a second of the engine's timed work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from uda_core.methods.base import PAIRED_SOURCE
from uda_core.methods.registry import METHODS
from uda_core.synth.demo_files import demo_set

from ..layers import keep_head_up
from ..segmentation.data_box import DataBox
from ..segmentation.mask_layers import MaskLayers
from ..segmentation.method_box import MethodBox
from ..segmentation.model_box import ModelBox
from ..segmentation.run_box import RunBox, record_speed
from ..segmentation.save_box import SaveBox
from ..widgets.close_guard import guard_close
from ..widgets.collapsible import Collapsible
from ..widgets.plots import LiveCurves
from ..worker import RunController, RunRequest

log = logging.getLogger(__name__)

GUI_PREVIEW_EVERY = 25   # steps between mask refreshes (each costs one volume's prediction)
GUI_REFRESH_MS = 1000    # during a run, the progress bar and the curves are redrawn together,
                         # at most once a second (each redraw of the window costs CPU and GIL
                         # time the run's thread waits for; see the module doc)
PANEL_MIN_WIDTH = 340    # px: the narrowest the dock may be and still show every control
CURVES_SHARE = 0.25      # of the window's height, for the live curves dock
READY_HINTS = {          # the status line before a run, by what is missing
    (False, False): "Choose a model and add your scans, then press Adapt.",
    (False, True): "Choose a model, then press Adapt.",
    (True, False): "Add the scans to adapt to (Scans: Add files…), then press Adapt.",
    (True, True): "Ready: press Adapt.",
}


class UdaPanel(QWidget):
    """The napari dock widget (npe2 command `uda-studio.panel`)."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layers = MaskLayers(napari_viewer)
        self.controller = RunController(self)
        self.summary: dict | None = None
        self._quality_start: float | None = None   # the selection score at step 0
        self.confirm = self._ask_yes_no  # replaced in tests

        self.model_box = ModelBox()
        self.data_box = DataBox(self.layers)
        self.method_box = MethodBox()
        self.method_box.set_engine_defaults({"preview_every": GUI_PREVIEW_EVERY})
        self.run_box = RunBox()
        self.save_box = SaveBox()
        self.curves = LiveCurves(redraw_ms=None)   # redrawn by _refresh_view
        self._latest_step = None   # the newest StepEvent not yet shown
        self._refresh = QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(GUI_REFRESH_MS)
        self._refresh.timeout.connect(self._refresh_view)

        self._lay_out()

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
        self.save_box.failed.connect(self.show_error)
        self._connect_controller()
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        keep_head_up(self.viewer)   # coronal and sagittal views with the head up
        self._curves_dock = None
        self._curves_wanted = False   # a run has started: the curves have something to show
        self._dock_curves()
        self._watch_close()
        self._refresh_availability()
        self._refresh_estimate()

    # -- set-up -------------------------------------------------------------------------------
    def _lay_out(self) -> None:
        """The scrolling column (model, scans, method) over the fixed action bar."""
        data = self.data_box
        data.setTitle("Scans")
        self.more_inputs = Collapsible(
            "Optional inputs", tooltip="Paired T1-weighted scans (for ddm), labelled scans "
            "(for adaptsegnet) and reference labels (to check the result, never to train)")
        for files in (data.paired, data.source, data.reference):
            self.more_inputs.add(files)   # moved out of the data box's own column
        data.layout().addWidget(self.more_inputs)
        data.reference.allow_folders(False)   # reference labels are files, never DICOM
        self.run_box.setTitle("Device and results folder")
        self.method_box.advanced.add(self.run_box)

        content = QWidget()
        column = QVBoxLayout(content)
        column.setContentsMargins(4, 4, 4, 4)
        for box in (self.model_box, self.data_box, self.method_box):
            column.addWidget(box)
        self.scroll = FittingScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setWidget(content)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.scroll)
        layout.addWidget(self._action_bar())   # right under the settings, however tall
        layout.addStretch(1)
        content.setMinimumWidth(PANEL_MIN_WIDTH - 24)   # room for the vertical scroll bar
        self.scroll.fit_width()

    def _action_bar(self) -> QWidget:
        """Adapt / Pause / Stop, progress, status, quality and Save: always in view."""
        run = self.run_box
        run.start.setText("Adapt")
        run.start.setToolTip("Adapt the model to your scans with the method above")
        run.start.setMinimumHeight(40)
        run.start.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        run.start.setStyleSheet("font-weight: bold; font-size: 15px")
        for button in (run.pause, run.stop):
            button.setMinimumHeight(40)
        self.quality = QLabel()
        self.quality.setWordWrap(True)
        self.quality.setToolTip("Label-free quality of the masks, the score that chooses the "
                                "saved step; every score is drawn in the live curves")
        self.quality.setVisible(False)
        self.save_box.setTitle("")
        self.save_box.setFlat(True)
        bar = QFrame()
        bar.setObjectName("uda-action-bar")
        bar.setFrameShape(QFrame.StyledPanel)
        buttons = QHBoxLayout()
        buttons.addWidget(run.start, 3)
        buttons.addWidget(run.pause, 1)
        buttons.addWidget(run.stop, 1)
        column = QVBoxLayout(bar)
        column.setContentsMargins(6, 6, 6, 4)
        column.addLayout(buttons)
        column.addWidget(run.progress)
        column.addWidget(run.status)
        column.addWidget(self.quality)
        column.addWidget(self.save_box)
        return bar

    def _dock_curves(self) -> None:
        window = getattr(self.viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            self._curves_dock = window.add_dock_widget(
                self.curves, name="UDA Studio: live curves", area="bottom")
            self._curves_dock.setVisible(False)   # shown from the first run on
            qt_window = getattr(window, "_qt_window", None)
            if qt_window is not None:
                # the side docks (layer list, this panel) keep the window's full height; the
                # curves sit under the canvas only
                qt_window.setCorner(Qt.BottomLeftCorner, Qt.LeftDockWidgetArea)
                qt_window.setCorner(Qt.BottomRightCorner, Qt.RightDockWidgetArea)

    def show_curves(self) -> None:
        """Show the live curves dock at a quarter of the window's height (a run started)."""
        dock = self._curves_dock
        if dock is None:
            return
        self._curves_wanted = True
        dock.setVisible(True)
        qt_window = getattr(self.viewer.window, "_qt_window", None)
        if qt_window is not None:
            height = max(int(qt_window.height() * CURVES_SHARE), 160)
            qt_window.resizeDocks([dock], [height], Qt.Vertical)

    def on_registration_tab(self, shown: bool) -> None:
        """The registration tab came to the front (`shown`) or left it: the curves dock hides
        with it and comes back with the adaptation tab once a run has drawn curves."""
        if self._curves_dock is not None:
            self._curves_dock.setVisible(not shown and self._curves_wanted)

    def _watch_close(self) -> None:
        self._close_filter = guard_close(self.viewer, self, self.close_requested)

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
        inputs = self.data_box.run_inputs(self._method_uses())
        request = RunRequest(
            model=self.model_box.spec, method=method, targets=inputs.targets,
            out_dir=out_dir, paired=inputs.paired, source=inputs.source,
            reference=inputs.reference, method_settings=method_settings,
            engine_settings=engine_settings, device=self.run_box.device.currentText(),
            overwrite=overwrite, standardise=self.method_box.standardise.isChecked(),
            threads=torch.get_num_threads())   # what `uda adapt` uses: torch's default
        self.curves.clear()
        self.curves.set_steps(int(engine_settings.get("steps") or 0))
        self._refresh.stop()
        self._latest_step = None   # nothing of a previous run is drawn after the reset
        self.show_curves()
        self._quality_start = None
        self.quality.setVisible(False)
        self.summary = None
        self._initial_scores = {}
        self.save_box.set_summary(None)
        self.run_box.reset_progress()
        run_name = self.layers.begin_run(method, inputs.targets)
        if engine_settings.get("preview_every"):
            self.layers.prepare_run()   # before the worker starts: the previews only fill them
        self._on_active_layer()
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
        if inputs.unused:
            text += f". Not used by this method: {' and '.join(inputs.unused)}"
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
            return "Choose a model first (Model, at the top)."
        targets = self.data_box.targets
        if not targets.paths():
            return "Add at least one target volume (Scans)."
        reading = self.data_box.reading()
        if reading:
            return (f"Still reading {len(reading)} file(s) (e.g. {reading[0].name}); press Start "
                    "again in a moment.")
        inputs = self.data_box.run_inputs(self._method_uses())
        if not inputs.targets:
            return ("None of the target volumes can be used: " + "; ".join(inputs.skipped)
                    + ".")
        reason = self.method_box.unavailable_reason()
        if reason:
            return f"Cannot start: {reason}."
        paired = self.data_box.paired.paths()
        if paired and PAIRED_SOURCE in self._method_uses() and (
                len(paired) != len(self.data_box.targets.paths())):
            return "Give one paired source image per target volume, in the same order."
        return ""

    def _method_uses(self) -> set[str]:
        """The data the chosen method needs or can use (uda_core.methods.base names)."""
        method = METHODS[self.method_box.method]
        return {*method.needs, *method.optional_needs}

    def _on_step(self, event) -> None:
        self.curves.add_losses(event.step, event.losses)
        self._latest_step = event
        self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        if not self._refresh.isActive():
            self._refresh.start()

    def _refresh_view(self) -> None:
        """Draw what came since the last redraw: the curves' new points and the newest step's
        progress (one repaint of the window)."""
        self._refresh.stop()
        self.curves.flush()
        event, self._latest_step = self._latest_step, None
        if event is not None:
            self.run_box.show_progress(event.step, event.total, event.elapsed_s)

    def _on_scores(self, event) -> None:
        selection = None if self.method_box.engine_settings().get("select_by") == "last" \
            else event.selection
        if event.step == 0:
            self._initial_scores = dict(event.scores)
        self.curves.add_scores(event.step, event.scores, event.reference, event.is_best,
                               selection=selection)
        self._schedule_refresh()
        self._show_quality(event.step, selection, event.is_best)

    def _show_quality(self, step: int, selection: float | None, is_best: bool) -> None:
        """One line: is the adapted network better than the original by the label-free score
        that chooses the saved step? (The scores themselves are in the curves dock.)"""
        if selection is None:
            return
        if step == 0 or self._quality_start is None:
            self._quality_start = selection
            text = "Quality check: the original network measured; adapting…"
        elif selection > self._quality_start and is_best:
            text = f"Quality check at step {step}: <b>better than the original</b> (best so far)"
        elif selection > self._quality_start:
            text = f"Quality check at step {step}: better than the original, not the best"
        else:
            text = f"Quality check at step {step}: <b>not better than the original</b>"
        self.quality.setText(f"<small>{text}</small>")
        self.quality.setVisible(True)

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
        self._refresh_view()
        self.summary = summary
        self.run_box.set_running(False)
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
        self._refresh_view()
        self.layers.discard_unfilled()
        self.run_box.set_running(False)
        self.show_error(message, details)

    def _on_stopped(self, message: str) -> None:
        """Stop before the first step: nothing was adapted; no dialog, just the fact."""
        self.run_box.set_running(False)
        self.run_box.reset_progress("stopped")
        self.run_box.status.setText(f"Stopped: {message}.")
        # a run stopped before its first step leaves no mask; removing napari layers takes
        # the GUI thread a while (about 0.1 s each), so the stop is shown first
        QTimer.singleShot(0, self.layers.discard_unfilled)

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
        self._count_optional_inputs()
        if not self.controller.is_running and self.summary is None:
            self.run_box.status.setText(READY_HINTS[(self.model_box.bundle is not None,
                                                     bool(self.data_box.targets.paths()))])

    def _count_optional_inputs(self) -> None:
        """"Optional inputs (1 paired, 1 reference)": what the folded section holds."""
        data = self.data_box
        counts = [(len(files.paths()), word) for files, word in
                  ((data.paired, "paired"), (data.source, "labelled"),
                   (data.reference, "reference"))]
        given = ", ".join(f"{n} {word}" for n, word in counts if n)
        self.more_inputs.header.setText(f"Optional inputs ({given})" if given else
                                        "Optional inputs")

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


class FittingScrollArea(QScrollArea):
    """A vertical scroll area that asks for its content's full height (up to half the
    screen), so that it takes no more room than the content needs and scrolls only when the
    dock is shorter."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)

    def setWidget(self, widget: QWidget) -> None:  # noqa: N802 (Qt name)
        super().setWidget(widget)
        widget.installEventFilter(self)

    def sizeHint(self):  # noqa: N802 (Qt name)
        hint = super().sizeHint()
        if self.widget() is not None:
            content = self.widget().sizeHint()
            # no taller than half the screen: past that it scrolls, and the action bar below
            # it stays on screen
            screen = self.screen()
            cap = screen.availableGeometry().height() // 2 if screen is not None else 600
            hint.setHeight(min(content.height() + 2 * self.frameWidth(), cap))
            hint.setWidth(max(hint.width(), content.width()))
        return hint

    def fit_width(self) -> None:
        """At least as wide as the content's minimum plus the vertical scroll bar, so that
        nothing is ever cut off on the right (there is no horizontal scroll bar)."""
        if self.widget() is not None:
            self.setMinimumWidth(self.widget().minimumSizeHint().width()
                                 + self.verticalScrollBar().sizeHint().width()
                                 + 2 * self.frameWidth())

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
        if watched is self.widget() and event.type() == QEvent.LayoutRequest:
            self.fit_width()
            self.updateGeometry()   # a section opened or closed: ask for the new height
        return False


def outcome_text(summary: dict, initial_scores: dict) -> str:
    """The run's outcome in plain words: whether the model changed, which step was chosen
    and its label-free score against step 0's, what was done to the intensities and why,
    and where the results are."""
    chosen, score = summary.get("chosen_step"), summary.get("selected_by", "")
    where = f" Results in {Path(summary['adapted_model']).parent}."
    stopped = (f"Stopped after {summary.get('steps_done')} steps. "
               if summary.get("status") == "cancelled" else "")
    if summary.get("status") == "cancelled":
        where += " Masks were not written (stopped): save the model, or run again."
    where = standardisation_text(summary) + where
    outcome = summary.get("outcome", "")
    if summary.get("kept_source") and "trains nothing" in outcome:
        return f"{stopped}No weight changed: the model is the original one.{where}"
    if summary.get("kept_source"):
        return (f"{stopped}No improvement found: the adapted model equals the original "
                f"({outcome}).{where}")
    if score == "last":
        return f"{stopped}Adapted: kept step {chosen}, the last good weights.{where}"
    before = initial_scores.get(score)
    after = (summary.get("chosen_scores") or {}).get(score)
    change = (f", label-free score ({score}) {before:.3g} -> {after:.3g}"
              if before is not None and after is not None else "")
    return f"{stopped}Adapted: chosen step {chosen}{change}.{where}"


def standardisation_text(summary: dict) -> str:
    """" Intensities standardised: <why>." (or left as they are), "" for a run that was not
    asked to standardise."""
    checked = summary.get("standardisation") or {}
    if "used" in checked:
        done = "standardised" if checked["used"] else "left as they are"
        return f" Intensities {done}: {checked.get('reason', '')}."
    return " Intensities standardised." if summary.get("standardised") else ""
