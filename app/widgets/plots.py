"""Live curves of a run: loss terms above, label-free scores below, sharing the step axis.

Every loss term is drawn twice: its raw values faint and an exponential moving average bold.
Scores are few (one scoring every `score_every` steps) and are what the engine compares when
it chooses a checkpoint, so they are drawn as they are, bold with a marker at each scoring;
Dice against reference labels, when the user gave some, is dashed and named as evaluation
only. One curve stands for all of them: "quality", the score that chooses the saved step
(ScoreEvent.selection, higher is better); the individual scores are drawn only when "all
scores" is ticked (or when no quality curve comes, e.g. select_by "last"). Points go into
growing numpy arrays; the curves are redrawn at most 10 times a second, or only when the
owner calls flush() (``redraw_ms=None``: the app's panel redraws them with its progress bar,
once a second during a run).
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtGui import QColor, QPalette
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

# Bright enough for napari's dark theme (#23242b), dark enough for its light one.
PALETTE = ("#4c9be8", "#f28e2b", "#59c26b", "#e15759", "#c38fd6", "#40c4c4", "#edc948",
           "#ff9da7", "#c9a27e")
ROLLBACK_COLOUR = "#e5484d"
RAW_ALPHA = 60               # of 255, the faint raw loss values
REDRAW_MS = 100              # at most 10 redraws a second, however fast events come
REFERENCE_NAME = "Dice (reference labels, evaluation only)"
QUALITY_NAME = "quality (chooses the saved step)"
# Scores on a scale of their own (SND is ~6 where the others stay within +-1): recorded in
# series() and the run report, not drawn, so they do not flatten the others.
UNDRAWN_SCORES = ("snd",)


class Series:
    """One curve's points in arrays that grow by doubling, with its moving average.

    smoothing: the EMA's beta (0 = no smoothing): avg = beta * avg + (1 - beta) * value,
    starting at the first value."""

    def __init__(self, smoothing: float = 0.0):
        self.smoothing = smoothing
        self.n = 0
        self._x = np.empty(256)
        self._y = np.empty(256)
        self._avg = np.empty(256)

    def append(self, step: float, value: float) -> None:
        if self.n == len(self._x):
            self._x, self._y, self._avg = (np.concatenate([a, np.empty_like(a)])
                                           for a in (self._x, self._y, self._avg))
        previous = self._avg[self.n - 1] if self.n else value
        self._x[self.n], self._y[self.n] = step, value
        if np.isfinite(previous):
            self._avg[self.n] = self.smoothing * previous + (1 - self.smoothing) * value
        else:
            self._avg[self.n] = value
        self.n += 1

    @property
    def x(self) -> np.ndarray:
        return self._x[:self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[:self.n]

    @property
    def smoothed(self) -> np.ndarray:
        return self._avg[:self.n]


class FlowLegend(QLabel):
    """A legend under a plot whose entries wrap like words, so it fits a narrow dock and
    never hides a curve. Entries: (name, colour, dashed, markers)."""

    def __init__(self):
        super().__init__()
        self.setWordWrap(True)
        self.setTextFormat(Qt.RichText)
        self.setContentsMargins(60, 0, 4, 0)   # under the plot area, past the y axis
        self.entries: list[tuple[str, str, bool, bool]] = []
        self.hidden: set[str] = set()   # names left out (their curves are hidden)

    def add(self, name: str, colour: str, dashed: bool = False, markers: bool = False) -> None:
        self.entries.append((name, colour, dashed, markers))
        self.render()

    def clear_entries(self) -> None:
        self.entries = []
        self.render()

    def names(self) -> list[str]:
        return [entry[0] for entry in self.entries]

    def render(self, colours: dict[str, str] | None = None) -> None:
        """Redraw; `colours` overrides entries' colours by name (after a theme change)."""
        parts = []
        for name, colour, dashed, markers in self.entries:
            if name in self.hidden:
                continue
            colour = (colours or {}).get(name, colour)
            swatch = "&#x2501;&#x2009;&#x2501;&#x2009;&#x2501;" if dashed else \
                ("&#x2501;&#x25CF;&#x2501;" if markers else "&#x2501;&#x2501;")
            parts.append(f"<span style='white-space:nowrap'><b style='color:{colour}'>"
                         f"{swatch}</b>&nbsp;{html.escape(name)}</span>")
        self.setText("<small>" + " &nbsp; ".join(parts) + "</small>")


def _plot_widget(title: str) -> pg.PlotWidget:
    widget = pg.PlotWidget()
    plot = widget.getPlotItem()
    plot.setLabel("left", title)
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.setMouseEnabled(x=True, y=False)
    axis = plot.getAxis("left")
    axis.setWidth(56)                  # both plots the same, so their steps line up
    axis.enableAutoSIPrefix(False)
    widget.setMinimumHeight(80)       # both plots and legends fit a quarter of 800 px
    return widget


class LiveCurves(QWidget):
    """Two linked plots: loss terms (top) and label-free scores (bottom).

    Keys in series(): "loss/<term>", "score/<name>", "reference/<name>" (the same names as
    the engine's metrics.jsonl rows).
    """

    def __init__(self, parent: QWidget | None = None, loss_smoothing: float = 0.9,
                 redraw_ms: int | None = REDRAW_MS):
        """redraw_ms: the least time between redraws after new points; None: redrawn only by
        flush() (and by the markers, which draw at once)."""
        super().__init__(parent)
        self.loss_smoothing = loss_smoothing
        self.loss_view, self.score_view = _plot_widget("loss terms"), _plot_widget("scores")
        self.loss_plot: pg.PlotItem = self.loss_view.getPlotItem()
        self.score_plot: pg.PlotItem = self.score_view.getPlotItem()
        self.loss_legend, self.score_legend = FlowLegend(), FlowLegend()
        self.score_plot.setXLink(self.loss_plot)
        self.score_plot.setLabel("bottom", "step")
        self.loss_plot.getAxis("bottom").setStyle(showValues=False)
        self.loss_plot.getViewBox().sigYRangeChanged.connect(self._place_rollback_labels)
        self.zero_line = pg.InfiniteLine(0, angle=0, pen=pg.mkPen((128, 128, 128, 110),
                                                                  style=Qt.DashLine))
        self.log_y = QCheckBox("log y (losses)")
        self.log_y.setToolTip("Logarithmic loss axis. Terms that can be negative "
                              "(information maximisation) are not drawn where they are <= 0.")
        self.log_y.toggled.connect(self._on_log_y)
        self.all_scores = QCheckBox("all scores")
        self.all_scores.setToolTip("Draw every label-free score behind the quality curve")
        self.all_scores.toggled.connect(self._show_scores)
        controls = QHBoxLayout()
        controls.setContentsMargins(4, 0, 4, 0)
        controls.addStretch(1)
        controls.addWidget(self.all_scores)
        controls.addWidget(self.log_y)
        self.canvas = QWidget()           # what export_png saves: plots and legends
        canvas_layout = QVBoxLayout(self.canvas)
        canvas_layout.setContentsMargins(0, 0, 0, 0)
        canvas_layout.setSpacing(4)
        for widget, stretch in ((self.loss_view, 3), (self.loss_legend, 0),
                                (self.score_view, 2), (self.score_legend, 0)):
            canvas_layout.addWidget(widget, stretch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(controls)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS if redraw_ms is None else int(redraw_ms))
        self._timer.timeout.connect(self.flush)
        self._self_redraw = redraw_ms is not None
        self._text_colour = QColor("#f0f1f2")
        self.clear()
        self._apply_palette()

    # -- data in -------------------------------------------------------------------------
    def add_losses(self, step: int, losses: dict[str, float]) -> None:
        """One step's loss terms."""
        for name, value in losses.items():
            self._append(f"loss/{name}", step, value)

    def add_scores(self, step: int, scores: dict[str, float],
                   reference: dict[str, float] | None = None, is_best: bool = False,
                   selection: float | None = None) -> None:
        """One scoring: label-free scores, optional reference Dice, whether it is the best so
        far (a dotted "best" line follows it), and the selection score (the quality curve,
        key "selection/quality"; None: not drawn)."""
        if selection is not None:
            self._append("selection/quality", step, selection)
        for name, value in scores.items():
            self._append(f"score/{name}", step, value)
        for name, value in (reference or {}).items():
            self._append(f"reference/{name}", step, value)
        if is_best:
            self.best_line.setValue(step)
            self.best_line.setVisible(True)

    def mark_chosen(self, step: int) -> None:
        """The checkpoint the run chose: a solid line across both plots."""
        for line in self.chosen_lines:
            line.setValue(step)
            line.setVisible(True)
        self.chosen_lines[0].label.setFormat(f"chosen: step {step}")
        self.best_line.setVisible(False)
        self.markers = [m for m in self.markers if m[0] != "chosen"] + [("chosen", step)]

    def mark_rollback(self, step: int, to_step: int) -> None:
        """A collapse at `step` rolled the weights back to `to_step`: the discarded steps are
        shaded and a dashed line marks the collapse."""
        pen = pg.mkPen(ROLLBACK_COLOUR, width=1.5, style=Qt.DashLine)
        for plot in (self.loss_plot, self.score_plot):
            region = pg.LinearRegionItem((to_step, step), movable=False,
                                         brush=pg.mkBrush(229, 72, 77, 35), pen=pg.mkPen(None))
            line = pg.InfiniteLine(step, pen=pen)
            plot.addItem(region, ignoreBounds=True)
            plot.addItem(line, ignoreBounds=True)
        label = pg.TextItem(f"rollback to {to_step}", color=ROLLBACK_COLOUR, anchor=(1, 0))
        label.setPos(step, 0)
        self.loss_plot.addItem(label, ignoreBounds=True)
        self._rollback_labels.append(label)
        self.markers.append(("rollback", step))
        self._place_rollback_labels()

    def set_steps(self, total: int) -> None:
        """Fix the step axis at 0..total (a run's length), so the curves grow across it:
        with the axis following the points, each redraw also redrew both step axes
        (pyqtgraph paints its axes in Python, holding the GIL the run's thread needs).
        Until clear(), the axis no longer follows the points."""
        self.loss_plot.setXRange(0, max(int(total), 1), padding=0.02)

    def clear(self) -> None:
        """Forget every curve and marker (a new run); the step axis follows the points
        again."""
        for legend in (self.loss_legend, self.score_legend):
            legend.clear_entries()
        for plot in (self.loss_plot, self.score_plot):
            plot.clear()
            plot.enableAutoRange(x=True)
        self.loss_plot.addItem(self.zero_line, ignoreBounds=True)
        self._series: dict[str, Series] = {}
        self._items: dict[str, tuple[pg.PlotDataItem, ...]] = {}
        self._colours: dict[str, dict[str, str]] = {"loss": {}, "score": {}}
        self._dirty: set[str] = set()
        self._rollback_labels: list = []
        self.markers: list[tuple[str, int]] = []
        self.best_line = pg.InfiniteLine(0, label="best", labelOpts={"position": 0.92})
        self.best_line.setVisible(False)
        self.score_plot.addItem(self.best_line, ignoreBounds=True)
        self.chosen_lines = []
        for plot, label in ((self.loss_plot, "chosen"), (self.score_plot, None)):
            line = pg.InfiniteLine(0, label=label,
                                   labelOpts={"position": 0.92, "anchors": [(0, 0), (0, 0)]})
            line.setVisible(False)
            plot.addItem(line, ignoreBounds=True)
            self.chosen_lines.append(line)
        self._apply_palette()

    # -- data out ------------------------------------------------------------------------
    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Every curve's raw points, {key: [(step, value), ...]}."""
        return {key: [(int(x), float(y)) for x, y in zip(s.x, s.y, strict=True)]
                for key, s in self._series.items()}

    def curve(self, key: str, smoothed: bool = True) -> pg.PlotDataItem:
        """The drawn item of `key` ("loss/total"): its moving average (or, with
        smoothed=False, its raw values; scores have only one item)."""
        items = self._items[key]
        return items[-1] if smoothed else items[0]

    def export_png(self, path: str) -> str:
        """Save both plots as they are shown (after drawing pending points) to `path`."""
        self.flush()
        image = self.canvas.grab()
        if image.isNull() or not image.save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return str(path)

    # -- drawing -------------------------------------------------------------------------
    def flush(self) -> None:
        """Draw the points added since the last redraw."""
        self._timer.stop()
        for key in self._dirty:
            series, items = self._series[key], self._items[key]
            if len(items) == 2:
                items[0].setData(series.x, series.y)
                items[1].setData(series.x, series.smoothed)
            else:
                items[0].setData(series.x, series.y)
        self._dirty.clear()

    def _append(self, key: str, step: int, value: float) -> None:
        if key not in self._series:
            self._add_curve(key)
        self._series[key].append(step, float(value))
        self._dirty.add(key)
        if self._self_redraw and not self._timer.isActive():
            self._timer.start()

    def _colour(self, group: str, name: str) -> str:
        colours = self._colours[group]
        if name not in colours:
            colours[name] = PALETTE[len(colours) % len(PALETTE)]
        return colours[name]

    def _add_curve(self, key: str) -> None:
        group, name = key.split("/", 1)
        if group == "loss":
            # "total" (the sum the others make up) in the text colour, the others in order
            colour = QColor(self._text_colour if name == "total" else self._colour("loss", name))
            faint = QColor(colour)
            faint.setAlpha(RAW_ALPHA)
            raw = pg.PlotDataItem(pen=pg.mkPen(faint, width=1))
            bold = pg.PlotDataItem(pen=pg.mkPen(colour, width=2), name=name)
            for item in (raw, bold):
                item.setClipToView(True)
                item.setDownsampling(auto=True, method="peak")
                self.loss_plot.addItem(item)
            self.loss_legend.add(name, colour.name())
            self._items[key] = (raw, bold)
            self._series[key] = Series(self.loss_smoothing)
            return
        if group == "selection":
            colour = self._text_colour
            item = pg.PlotDataItem(pen=pg.mkPen(colour, width=3), symbol="o", symbolSize=7,
                                   symbolPen=None, symbolBrush=colour, name=QUALITY_NAME)
            self.score_plot.addItem(item)
            self.score_legend.add(QUALITY_NAME, QColor(colour).name(), markers=True)
            self._items[key] = (item,)
            self._series[key] = Series(0.0)
            self._show_scores()
            return
        if group == "reference":
            colour = self._text_colour
            label = REFERENCE_NAME if name == "dice" else f"{name} (reference labels, " \
                                                           f"evaluation only)"
            pen = pg.mkPen(colour, width=2, style=Qt.DashLine)
        else:
            colour = QColor(self._colour("score", name))
            label = name
            pen = pg.mkPen(colour, width=2)
        if group == "score" and name in UNDRAWN_SCORES:
            item = pg.PlotDataItem()   # kept for series(); not added to the plot
            self._items[key] = (item,)
            self._series[key] = Series(0.0)
            return
        item = pg.PlotDataItem(pen=pen, symbol="o", symbolSize=5, symbolPen=None,
                               symbolBrush=colour, name=label)
        self.score_plot.addItem(item)
        self.score_legend.add(label, QColor(colour).name(), dashed=group == "reference",
                              markers=group == "score")
        self._items[key] = (item,)
        self._series[key] = Series(0.0)
        self._show_scores()

    def scores_shown(self) -> bool:
        """Whether the individual label-free scores are drawn (else only quality)."""
        return self.all_scores.isChecked() or "selection/quality" not in self._items

    def _show_scores(self, *_) -> None:
        shown = self.scores_shown()
        hidden = set()
        for key, items in self._items.items():
            if key.startswith("score/"):
                items[0].setVisible(shown)
                if not shown:
                    hidden.add(key.split("/", 1)[1])
        self.score_legend.hidden = hidden
        self.score_legend.render()

    def _place_rollback_labels(self, *_) -> None:
        """Keep rollback labels at the top of the loss plot's visible range."""
        if not self._rollback_labels:
            return
        top = self.loss_plot.viewRange()[1][1]
        for label in self._rollback_labels:
            label.setPos(label.pos().x(), top)

    def _on_log_y(self, on: bool) -> None:
        self.loss_plot.setLogMode(y=on)
        self.zero_line.setVisible(not on)

    # -- theme ---------------------------------------------------------------------------
    def changeEvent(self, event) -> None:  # Qt override: follow napari's light/dark theme
        if event.type() in (QEvent.PaletteChange, QEvent.StyleChange):
            self._apply_palette()
        super().changeEvent(event)

    def showEvent(self, event) -> None:
        self._apply_palette()
        super().showEvent(event)

    def _apply_palette(self) -> None:
        """Background and text of the plots from the widget's palette (which napari's
        stylesheet sets), so they match the dock they sit in."""
        if not hasattr(self, "chosen_lines"):
            return
        self.ensurePolished()
        background = self.palette().color(QPalette.Window)
        text = self.palette().color(QPalette.WindowText)
        self._text_colour = text
        for view in (self.loss_view, self.score_view):
            view.setBackground(background)
        for plot in (self.loss_plot, self.score_plot):
            for side in ("left", "bottom"):
                axis = plot.getAxis(side)
                axis.setPen(pg.mkPen(text.darker(130) if background.value() < 128
                                     else text.lighter(160)))
                axis.setTextPen(pg.mkPen(text))
        self.best_line.setPen(pg.mkPen(text, style=Qt.DotLine))
        self.best_line.label.setColor(text)
        for line in self.chosen_lines:
            line.setPen(pg.mkPen(text, width=1.5))
        self.chosen_lines[0].label.setColor(text)
        for key, items in self._items.items():
            if key.startswith("reference/"):
                items[0].setPen(pg.mkPen(text, width=2, style=Qt.DashLine))
                items[0].setSymbolBrush(text)
            elif key == "selection/quality":
                items[0].setPen(pg.mkPen(text, width=3))
                items[0].setSymbolBrush(text)
            elif key == "loss/total":
                faint = QColor(text)
                faint.setAlpha(RAW_ALPHA)
                items[0].setPen(pg.mkPen(faint, width=1))
                items[1].setPen(pg.mkPen(text, width=2))
        self.loss_legend.render({"total": text.name()})
        self.score_legend.render({n: text.name() for n in self.score_legend.names()
                                  if n.endswith("(reference labels, evaluation only)")
                                  or n == QUALITY_NAME})
