"""The report of one finished adaptation run: OUT/report.png and OUT/report.md.

Built only from what the run left in its folder (OUT/metrics.jsonl and OUT/run.json, see
uda_core.runs.adapt), so it can be written again later for any run folder. The figure has one
panel of loss terms against step (smoothed, with the raw values faint behind), one panel of
the label-free scores, and, when reference labels were given, one panel of Dice against them;
a vertical line marks the chosen step. Both files are written atomically. No Qt, no pyplot:
matplotlib's Agg canvas only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uda_core import __version__
from uda_core.io.atomic import atomic_output
from uda_core.scores.label_free import HIGHER_IS_BETTER

Series = list[tuple[int, float]]

STATUS_NOTES = {  # how a run that did not complete its planned steps ended
    "cancelled": "The run was cancelled after {steps} steps; the choice covers those steps.",
    "stopped early": "The run stopped early after {steps} steps: the selection score stopped "
                     "improving (engine.patience).",
    "collapsed": "The run stopped after {steps} steps: the prediction kept collapsing "
                 "(engine.max_rollbacks reached).",
}


def read_metrics(path: str | Path) -> dict[str, Series]:
    """Every numeric key of a metrics.jsonl as a series of (step, value), in file order.

    Keys are as written by the run (``loss/<term>``, ``score/<name>``, ``reference/<name>``,
    ``selection``, ``time_s`` in seconds, ``rollback_to``); booleans (``best``) and text are
    left out. A file that holds several runs (metrics.jsonl is appended to) gives only the
    last one: rows before the last fresh start (a row at step 0) are ignored; a resumed run
    has no step-0 row, so it continues the run it resumed. Unreadable lines (a line cut short
    by a crash) are skipped.
    """
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    starts = [i for i, row in enumerate(rows) if row["step"] == 0]
    series: dict[str, Series] = {}
    for row in rows[starts[-1] if starts else 0:]:
        for key, value in row.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            series.setdefault(key, []).append((row["step"], float(value)))
    return series


def trailing_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Mean of each value and the `window - 1` before it (fewer at the start), (N,)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) == 0 or window <= 1:
        return array
    sums = np.cumsum(np.concatenate([[0.0], array]))
    ends = np.arange(1, len(array) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def write_run_report(out_dir: str | Path, summary: dict | None = None) -> dict[str, Path]:
    """Write OUT/report.png and OUT/report.md for the run in `out_dir`.

    `summary` is the run summary (what run_adaptation returns, i.e. OUT/run.json); when None
    it is read from OUT/run.json. Returns {"png": path, "md": path}.
    """
    out_dir = Path(out_dir)
    if summary is None:
        summary = json.loads((out_dir / "run.json").read_text(encoding="utf-8"))
    metrics_path = out_dir / "metrics.jsonl"
    series = read_metrics(metrics_path) if metrics_path.is_file() else {}
    png = write_report_figure(series, summary, out_dir / "report.png")
    md = out_dir / "report.md"
    with atomic_output(md, overwrite=True) as tmp:
        tmp.write_text(report_markdown(series, summary, out_dir), encoding="utf-8")
    return {"png": png, "md": md}


# --- the figure ---------------------------------------------------------------------------

def figure_panels(series: dict[str, Series]) -> list[tuple[str, dict[str, Series]]]:
    """The figure's panels, top to bottom: ("losses", {term: series}), ("scores", {name:
    series}) and, only when reference rows were logged, ("reference", {name: series})."""
    def strip(prefix: str) -> dict[str, Series]:
        return {k[len(prefix):]: v for k, v in series.items() if k.startswith(prefix)}
    panels = [("losses", strip("loss/")), ("scores", strip("score/"))]
    reference = strip("reference/")
    return panels + [("reference", reference)] if reference else panels


def write_report_figure(series: dict[str, Series], summary: dict, path: Path) -> Path:
    """The curves of a run as a PNG (about 1000 x 330 px per panel), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = figure_panels(series)
    fig = Figure(figsize=(8.5, 2.8 * len(panels) + 0.5), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    draw = {"losses": _draw_losses, "scores": _draw_scores, "reference": _draw_reference}
    chosen = summary.get("chosen_step")
    rollbacks = [step for step, _ in series.get("rollback_to", [])]
    for ax, (kind, data) in zip(axes, panels, strict=True):
        if data:
            draw[kind](ax, data, summary)
        else:
            ax.text(0.5, 0.5, f"no {kind} logged", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        if chosen is not None:
            ax.axvline(chosen, color="black", linestyle="--", linewidth=1,
                       label=f"chosen step {chosen}")
        for k, step in enumerate(rollbacks):
            ax.axvline(step, color="tab:red", linewidth=0.8, alpha=0.6,
                       label="rollback" if k == 0 else None)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(_title(summary), fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _title(summary: dict) -> str:
    targets = summary.get("targets") or []
    return (f"{summary.get('method', '?')} on {len(targets)} target(s): "
            f"{summary.get('status', '?')}, {summary.get('steps_done', '?')} steps, "
            f"chose step {summary.get('chosen_step', '?')} by {summary.get('selected_by', '?')}")


def _draw_losses(ax, losses: dict[str, Series], summary: dict) -> None:
    lowest = math.inf
    for k, (name, points) in enumerate(sorted(losses.items())):
        steps, values = np.array(points).T
        window = max(1, len(values) // 20)
        colour = f"C{k}"
        ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        ax.plot(steps, trailing_mean(values, window), color=colour, linewidth=1.6,
                label=name)
        lowest = min(lowest, float(np.min(values)))
    highest = max(float(np.max(np.array(p)[:, 1])) for p in losses.values())
    if lowest > 0 and highest / lowest > 100:  # terms of very different sizes
        ax.set_yscale("log")
    ax.set_ylabel("loss (raw faint,\ntrailing mean solid)")


def _draw_scores(ax, scores: dict[str, Series], summary: dict) -> None:
    """Each score's change since its first value, signed so that up is better."""
    selected = summary.get("selected_by")
    for k, (name, points) in enumerate(sorted(scores.items())):
        steps, values = np.array(points).T
        sign = -1.0 if HIGHER_IS_BETTER.get(name) is False else 1.0
        bold = name == selected
        ax.plot(steps, sign * (values - values[0]), marker="o", markersize=3,
                color=f"C{k}", linewidth=2.2 if bold else 1.0,
                label=f"{name}{' (lower better)' if sign < 0 else ''}"
                      f"{' [selects]' if bold else ''}")
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    ax.set_ylabel("label-free score:\nimprovement since step 0")


def _draw_reference(ax, reference: dict[str, Series], summary: dict) -> None:
    for k, (name, points) in enumerate(sorted(reference.items())):
        steps, values = np.array(points).T
        ax.plot(steps, values, marker="o", markersize=3, color=f"C{k}", label=name)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("Dice vs reference labels\n(evaluation only)")


# --- the text -----------------------------------------------------------------------------

def _value_at(points: Series, step: int | None) -> float | None:
    """The value logged at `step` (the last one logged at that step), or None."""
    found = [v for s, v in points if s == step]
    return found[-1] if found else None


def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(v) if not isinstance(v, str) else v for v in row)
              + " |" for row in rows]
    return lines


def _why(series: dict[str, Series], summary: dict) -> list[str]:
    """Sentences saying how the chosen step was chosen."""
    chosen, by = summary.get("chosen_step"), summary.get("selected_by")
    every = (summary.get("engine_config") or {}).get("score_every")
    lines = []
    if by == "last":
        lines.append(f"Chosen by `last`: the final weights that passed the collapse guard "
                     f"(step {chosen}).")
    else:
        direction = "higher" if by is None or HIGHER_IS_BETTER.get(by, True) else "lower"
        cadence = f"every {every} steps and " if every else ""
        lines.append(f"The network was scored without labels {cadence}at the end; the weights "
                     f"with the best `{by}` ({direction} is better) were kept: step {chosen}.")
        points = series.get(f"score/{by}", [])
        at_start, at_chosen = _value_at(points, 0), _value_at(points, chosen)
        if points and at_chosen is not None:
            chosen_text = "" if chosen == 0 else f"; at step {chosen}: {_number(at_chosen)}"
            lines.append(f"`{by}` at step 0: {_number(at_start)}{chosen_text}; at the last "
                         f"scoring (step {points[-1][0]}): {_number(points[-1][1])}.")
    if chosen == 0:
        lines.append("No scoring after an update beat the network before adaptation, so the "
                     "adapted model keeps the weights it started from.")
    status = summary.get("status")
    if status in STATUS_NOTES:
        lines.append(STATUS_NOTES[status].format(steps=summary.get("steps_done", "?")))
    rollbacks = series.get("rollback_to", [])
    if rollbacks:
        lines.append(f"The collapse guard rolled back {len(rollbacks)} time(s): "
                     + ", ".join(f"step {s} -> {int(v)}" for s, v in rollbacks) + ".")
    return lines


def _score_rows(series: dict[str, Series], chosen: int | None) -> list[list]:
    rows = []
    for prefix, note in (("score/", ""), ("reference/", " (reference labels)")):
        for key in sorted(k for k in series if k.startswith(prefix)):
            points = series[key]
            name = key[len(prefix):]
            higher = HIGHER_IS_BETTER.get(name)
            better = "" if higher is None else "higher" if higher else "lower"
            if prefix == "reference/":
                better = "higher"
            rows.append([f"{name}{note}", better, _value_at(points, 0),
                         _value_at(points, chosen), points[-1][1]])
    return rows


def _files(summary: dict, out_dir: Path) -> list[str]:
    """Relative paths of what the run wrote (those that exist, plus run.json and the report)."""
    names = ["adapted.pt", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt"]
    names = [n for n in names if (out_dir / n).exists()]
    for mask in summary.get("masks") or []:
        mask = Path(mask)
        names.append(str(mask.relative_to(out_dir)) if mask.is_relative_to(out_dir)
                     else str(mask))
    return [*names, "run.json", "report.png", "report.md"]


def report_markdown(series: dict[str, Series], summary: dict, out_dir: Path) -> str:
    """The text of report.md for a run (see write_run_report)."""
    chosen = summary.get("chosen_step")
    engine = summary.get("engine_config") or {}
    lines = [f"# Adaptation report: {summary.get('method', '?')}", "",
             "![loss terms, label-free scores and the chosen step](report.png)", ""]
    lines += _table(["", ""], [
        ["Status", f"{summary.get('status', '?')} ({summary.get('steps_done', '?')} of "
                   f"{engine.get('steps', '?')} steps)"],
        ["Method", f"`{summary.get('method', '?')}`"],
        ["Model", f"`{summary.get('model', '?')}`"],
        ["Chosen step", f"{_number(chosen)} (by `{summary.get('selected_by', '?')}`)"],
        ["Device", str(summary.get("device", "?"))],
        ["Run time", f"{_number(summary.get('seconds'))} s "
                     f"({_number(summary.get('steps_per_second'))} steps/s)"],
        ["Package", f"uda-studio {summary.get('package_version', '?')} (report by "
                    f"{__version__})"],
    ])
    lines += ["", "## Chosen step", "", *_why(series, summary), ""]
    rows = _score_rows(series, chosen)
    if rows:
        last = max((s for k, p in series.items() if k.startswith("score/") for s, _ in p),
                   default=None)
        lines += ["## Scores", "", *_table(
            ["score", "better", "step 0", f"chosen (step {_number(chosen)})",
             f"last scored (step {_number(last)})"], rows), ""]
        if any(k.startswith("reference/") for k in series):
            lines += ["Reference Dice is for evaluation only: it never trains or chooses.", ""]
    lines += ["## Settings", ""]
    settings = [[f"method.{k}", json.dumps(v)] for k, v in
                sorted((summary.get("method_config") or {}).items())]
    settings += [[f"engine.{k}", json.dumps(v)] for k, v in sorted(engine.items())]
    lines += [*_table(["setting", "value"], settings), ""]
    lines += ["## Data", ""]
    fingerprints = summary.get("data_fingerprints") or {}
    data_rows = [["target", f"`{t}`", fingerprints.get(t, "")]
                 for t in summary.get("targets") or []]
    for role in ("paired", "source", "reference"):
        data_rows += [[role, f"`{p}`", ""] for p in summary.get(role) or []]
    lines += [*_table(["role", "file", "fingerprint"], data_rows), ""]
    lines += ["## Files", "", *[f"- `{name}`" for name in _files(summary, out_dir)], ""]
    return "\n".join(lines)
