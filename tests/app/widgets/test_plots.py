"""Live curves: raw and smoothed losses, scores with reference Dice, markers, export."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
import pytest
from qtpy.QtGui import QImage

from app.widgets.plots import QUALITY_NAME, REFERENCE_NAME, LiveCurves, Series

pytestmark = pytest.mark.gui


def _losses(step: int, rng: np.random.Generator) -> dict[str, float]:
    return {"entropy": float(np.exp(-step / 50) + 0.1 * rng.normal()),
            "info_max": float(-0.3 + 0.05 * rng.normal()),      # can be negative
            "total": float(np.exp(-step / 40) + 0.1 * rng.normal())}


@pytest.fixture
def curves(qtbot):
    widget = LiveCurves()
    widget.resize(600, 500)
    qtbot.addWidget(widget)
    rng = np.random.default_rng(0)
    for step in range(1, 201):
        widget.add_losses(step, _losses(step, rng))
        if step % 40 == 0:
            widget.add_scores(step, {"entropy": 0.5 - step / 1000, "consistency": step / 250},
                              reference={"dice": 0.5 + step / 1000}, is_best=step <= 120)
    return widget


def test_series_lengths(curves):
    series = curves.series()
    assert set(series) == {"loss/entropy", "loss/info_max", "loss/total", "score/entropy",
                           "score/consistency", "reference/dice"}
    assert all(len(series[f"loss/{k}"]) == 200 for k in ("entropy", "info_max", "total"))
    assert len(series["score/consistency"]) == len(series["reference/dice"]) == 5
    assert series["score/consistency"][-1] == (200, pytest.approx(0.8))
    assert [s for s, _ in series["loss/total"]] == list(range(1, 201))


def test_redraws_are_batched_then_the_smoothed_curve_is_drawn(qtbot, curves):
    smooth = curves.curve("loss/total")
    raw = curves.curve("loss/total", smoothed=False)
    assert smooth is not raw
    qtbot.waitUntil(lambda: smooth.xData is not None and len(smooth.xData) == 200,
                    timeout=2000)          # the redraw timer fires on its own
    x, y_smooth = smooth.getData()
    _, y_raw = raw.getData()
    assert len(x) == len(y_raw) == 200
    assert np.std(np.diff(y_smooth)) < 0.5 * np.std(np.diff(y_raw))
    assert smooth.opts["pen"].widthF() > raw.opts["pen"].widthF()
    assert raw.opts["pen"].color().alpha() < 100 < smooth.opts["pen"].color().alpha()
    assert min(curves.series()["loss/info_max"])[1] < 0


def test_scores_and_reference_are_labelled(curves):
    curves.flush()
    assert curves.score_legend.names() == ["entropy", "consistency", REFERENCE_NAME]
    assert REFERENCE_NAME in curves.score_legend.text()
    reference = curves.curve("reference/dice")
    assert reference.opts["pen"].style() != curves.curve("score/entropy").opts["pen"].style()
    assert curves.loss_legend.names() == ["entropy", "info_max", "total"]
    assert curves.best_line.isVisible() and curves.best_line.value() == 120


def test_colours_are_stable_and_distinct(curves):
    colours = {k: curves.curve(k).opts["pen"].color().name() for k in curves.series()
               if k.startswith("loss/")}
    assert len(set(colours.values())) == 3
    curves.add_losses(201, {"entropy": 0.1, "info_max": -0.2, "total": 0.3})
    assert {k: curves.curve(k).opts["pen"].color().name() for k in colours} == colours


def test_mark_chosen_and_rollback(curves):
    curves.mark_rollback(160, 120)
    curves.mark_chosen(120)
    assert curves.markers == [("rollback", 160), ("chosen", 120)]
    for plot, line in zip((curves.loss_plot, curves.score_plot), curves.chosen_lines,
                          strict=True):
        assert line in plot.items and line.isVisible() and line.value() == 120
    assert "chosen: step 120" in curves.chosen_lines[0].label.toPlainText()
    assert not curves.best_line.isVisible()
    regions = [i for i in curves.loss_plot.items if isinstance(i, pg.LinearRegionItem)]
    assert len(regions) == 1 and regions[0].getRegion() == (120, 160)
    curves.mark_chosen(80)
    assert curves.markers == [("rollback", 160), ("chosen", 80)]


def test_export_png(curves, tmp_path):
    curves.mark_chosen(120)
    path = curves.export_png(tmp_path / "curves.png")
    data = (tmp_path / "curves.png").read_bytes()
    assert path.endswith("curves.png") and data[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage(path)
    assert image.width() >= 300 and image.height() >= 200
    # not a blank image: the curves put several colours on it
    colours = {image.pixelColor(x, y).name() for x in range(0, image.width(), 7)
               for y in range(0, image.height(), 7)}
    assert len(colours) > 10


def test_clear_and_log_axis(curves):
    curves.mark_chosen(120)
    curves.log_y.setChecked(True)
    curves.flush()
    assert curves.loss_plot.getAxis("left").logMode
    curves.clear()
    assert curves.series() == {} and curves.markers == []
    assert curves.loss_legend.names() == [] and curves.score_legend.names() == []
    assert not any(line.isVisible() for line in curves.chosen_lines)
    assert curves.loss_plot.listDataItems() == [] and curves.score_plot.listDataItems() == []
    curves.add_losses(1, {"total": 1.0})
    assert curves.series() == {"loss/total": [(1, 1.0)]}


def test_many_points_reuse_items_and_stay_fast(qtbot):
    widget = LiveCurves()
    qtbot.addWidget(widget)
    widget.add_losses(0, {"a": 1.0, "b": -1.0, "total": 0.0})
    items = {k: widget.curve(k) for k in widget.series()}
    start = time.perf_counter()
    for step in range(1, 3001):
        widget.add_losses(step, {"a": 1.0 / step, "b": -1.0, "total": 0.0})
        if step % 10 == 0:                   # 10 steps per redraw, as at 100 steps/s
            widget.flush()
    elapsed = time.perf_counter() - start
    assert {k: widget.curve(k) for k in widget.series()} == items
    assert len(widget.loss_plot.listDataItems()) == 6
    assert len(widget.curve("loss/a").xData) == 3001
    assert elapsed < 10.0, f"{elapsed:.1f} s for 3000 steps and 300 redraws"


def test_series_grows_in_place_and_smooths():
    series = Series(smoothing=0.5)
    for i, value in enumerate([2.0, 0.0, 0.0]):
        series.append(i, value)
    assert series.smoothed.tolist() == [2.0, 1.0, 0.5]
    for i in range(3, 1000):
        series.append(i, 1.0)
    assert series.n == 1000 and series.x[-1] == 999 and len(series.y) == 1000


def test_one_quality_curve_with_the_scores_behind_a_tick_box(qtbot):
    """Given the selection score, one "quality" curve is drawn and the individual scores
    wait behind "all scores"; without it (select_by "last") every score is drawn."""
    widget = LiveCurves()
    qtbot.addWidget(widget)
    for step in (0, 10, 20):
        widget.add_scores(step, {"entropy": 0.5, "consistency": 0.9},
                          reference={"dice": 0.7}, selection=0.9 + step / 100)
    widget.flush()
    assert widget.series()["selection/quality"] == [(0, 0.9), (10, 1.0), (20, 1.1)]
    assert widget.curve("selection/quality").isVisible()
    assert not widget.curve("score/entropy").isVisible()
    assert "entropy" not in widget.score_legend.text()
    assert QUALITY_NAME in widget.score_legend.text() and REFERENCE_NAME in \
        widget.score_legend.text()
    widget.all_scores.setChecked(True)
    assert widget.curve("score/entropy").isVisible()
    assert "entropy" in widget.score_legend.text()
    widget.all_scores.setChecked(False)
    widget.clear()
    widget.add_scores(5, {"entropy": 0.4})
    assert widget.scores_shown() and widget.curve("score/entropy").isVisible()


def test_without_a_redraw_interval_points_are_drawn_only_by_flush(qtbot):
    widget = LiveCurves(redraw_ms=None)
    qtbot.addWidget(widget)
    widget.add_losses(1, {"total": 1.0})
    widget.add_losses(2, {"total": 0.5})
    qtbot.wait(300)                                 # past the default 100 ms redraw
    assert widget.curve("loss/total").xData is None or len(widget.curve("loss/total").xData) == 0
    widget.flush()
    assert list(widget.curve("loss/total").xData) == [1, 2]


def test_a_runs_length_fixes_the_step_axis_until_cleared(qtbot):
    """With set_steps the step axis stays at 0..total as points come (a redraw then leaves
    both step axes as they were); clear() lets it follow the points again."""
    widget = LiveCurves(redraw_ms=None)
    qtbot.addWidget(widget)
    widget.set_steps(100)
    for step in range(1, 6):
        widget.add_losses(step, {"total": 1.0 / step})
        widget.add_scores(step, {"entropy": 0.1 * step}, is_best=True, selection=0.1 * step)
        widget.flush()
    for plot in (widget.loss_plot, widget.score_plot):
        low, high = plot.viewRange()[0]
        assert low <= 0 < 100 <= high < 105, (low, high)
    widget.clear()
    widget.add_losses(1, {"total": 1.0})
    widget.add_losses(2, {"total": 0.5})
    widget.flush()
    high = widget.loss_plot.getViewBox().childrenBounds()[0][1]
    assert 2 <= high < 2.1 and widget.loss_plot.getViewBox().autoRangeEnabled()[0]
