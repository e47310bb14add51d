"""The benchmark's Markdown section, its recorded claims, its plot and BENCHMARKS.md update."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from uda_core.bench.runner import BenchResult, MethodResult, ShiftResult
from uda_core.io.atomic import atomic_output

START_MARKER = "<!-- bench:segmentation:start -->"
END_MARKER = "<!-- bench:segmentation:end -->"
COLUMNS = ("method", "seeds", "Dice before", "Dice after", "HD95 before (mm)",
           "HD95 after (mm)", "gap closed", "wall s", "steps/s", "peak MB")
DEFAULT_RUN_BUDGET_S = 300.0    # "the default adaptation of 3 targets within 5 min"
OVERHEAD_TARGET = 0.95


def _num(value, digits: int, suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def _hd95(scores) -> str:
    return _num(scores.hd95, 2) + (" †" if scores.partial else "")


def _gap(shift: ShiftResult, dice: float) -> str:
    value = shift.gap_closed(dice)
    return "n/a" if not math.isfinite(value) else f"{100 * value:.0f} %"


def method_row(shift: ShiftResult, row: MethodResult) -> list[str]:
    """One table row (see COLUMNS) of a method's results on a shift."""
    before = shift.source_only
    if not row.scores:
        return [row.method, "-", _num(before.dice, 3), "failed", _hd95(before), "-", "-", "-",
                "-", "-"]
    after = _num(row.dice, 3)
    if len(row.scores) > 1:
        after += f" ± {_num(row.dice_std, 3)}"
    hd95_after = _num(row.hd95, 2) + (" †" if any(s.partial for s in row.scores) else "")
    return [row.method, ",".join(map(str, row.seeds)), _num(before.dice, 3), after,
            _hd95(before), hd95_after, _gap(shift, row.dice), _num(_mean(row.wall_s), 1),
            _num(_mean(row.steps_per_s), 2), _num(_mean(row.peak_mb), 0)]


def shift_table(shift: ShiftResult) -> list[str]:
    """Markdown lines: the table of one shift (source only, methods, oracle) and its notes."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    before = shift.source_only
    lines.append("| " + " | ".join(["source only", "-", _num(before.dice, 3), "-",
                                    _hd95(before), "-", "0 %", "-", "-", "-"]) + " |")
    for row in shift.methods:
        lines.append("| " + " | ".join(method_row(shift, row)) + " |")
    if shift.oracle is not None:
        o = shift.oracle
        epochs = f"{o.epochs} epoch" + ("" if o.epochs == 1 else "s")
        lines.append("| " + " | ".join([
            f"oracle (fine-tuned, {epochs})", "0", _num(before.dice, 3), _num(o.scores.dice, 3),
            _hd95(before), _hd95(o.scores), "100 %",
            _num(o.wall_s, 1), "-", _num(o.peak_mb, 0)]) + " |")
    notes = list(shift.notes)
    chosen = [f"{row.method} " + ", ".join(f"{c}/{n}" for c, n in zip(row.chosen_steps,
                                                                       row.steps, strict=True))
              for row in shift.methods if row.chosen_steps]
    if chosen:
        notes.append("step chosen by the label-free score / steps run: " + "; ".join(chosen))
    last = [f"{row.method} {_num(_mean(row.last_dice), 3)}" for row in shift.methods
            if row.last_dice]
    if last:
        notes.append("Dice with the last step's weights instead of the chosen ones (a "
                     "diagnosis of the choice, never used for it): " + "; ".join(last))
    for row in shift.methods:
        notes.extend(f"{row.method} {e}" for e in row.errors)
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])


def claims(result: BenchResult) -> list[tuple[str, bool | None, str]]:
    """The issue's expectations, each as (statement, met? (None: not measured), numbers).

    Recorded, never asserted: a benchmark reports what happened.
    """
    out: list[tuple[str, bool | None, str]] = []
    config = result.config

    def method(shift_name: str, name: str) -> MethodResult | None:
        shift = result.shifts.get(shift_name)
        row = next((m for m in shift.methods if m.method == name), None) if shift else None
        return row if row is not None and row.scores else None

    protocol = result.shifts.get("protocol")
    for name in ("sfda", "tent", "early"):
        row = method("protocol", name)
        text = f"protocol: {name} improves mean Dice over source-only"
        if row is None:
            out.append((text, None, "not run"))
        else:
            assert protocol is not None  # a row of it was found
            out.append((text, row.dice > protocol.source_only.dice,
                        f"{row.dice:.3f} vs {protocol.source_only.dice:.3f}"))
    row = method("protocol", "sfda")
    text = "protocol: sfda closes at least half of the source-only -> oracle gap"
    gap = protocol.gap_closed(row.dice) if row is not None and protocol else float("nan")
    out.append((text, gap >= 0.5 if math.isfinite(gap) else None,
                f"{100 * gap:.0f} %" if math.isfinite(gap) else "not measured"))

    t2 = result.shifts.get("t2")
    ddm, asn = method("t2", "ddm"), method("t2", "adaptsegnet")
    gap = t2.gap_closed(ddm.dice) if ddm is not None and t2 else float("nan")
    out.append(("t2 (aligned pairs): ddm closes at least 70 % of the gap",
                gap >= 0.7 if math.isfinite(gap) else None,
                f"{100 * gap:.0f} %" if math.isfinite(gap) else "not measured"))
    if ddm is not None and asn is not None:
        out.append(("t2: ddm beats adaptsegnet in final Dice", ddm.dice > asn.dice,
                    f"{ddm.dice:.3f} vs {asn.dice:.3f} (means over seeds "
                    f"{','.join(map(str, ddm.seeds))})"))
        spread_ok = (len(ddm.scores) > 1 and len(asn.scores) > 1) or None
        out.append(("t2: ddm has a smaller run-to-run spread than adaptsegnet",
                    ddm.dice_std < asn.dice_std if spread_ok else None,
                    f"std {_num(ddm.dice_std, 3)} vs {_num(asn.dice_std, 3)}"))
    else:
        out.append(("t2: ddm beats adaptsegnet in final Dice and in spread", None, "not run"))

    text = (f"the default adaptation (sfda, default steps) of 3 target volumes finishes "
            f"within {DEFAULT_RUN_BUDGET_S / 60:.0f} min")
    sfda_rows = {s: method(s, "sfda") for s in result.shifts}
    walls = {s: r.wall_s[0] for s, r in sfda_rows.items() if r is not None}
    if len(config.targets) != 3 or config.steps is not None or not walls:
        out.append((text, None, "not measured in this configuration"))
    else:
        worst = max(walls.values())
        out.append((text, worst <= DEFAULT_RUN_BUDGET_S,
                    ", ".join(f"{s} {w:.0f} s" for s, w in walls.items())))

    text = f"engine overhead: engine steps/s >= {OVERHEAD_TARGET:.2f} x a bare PyTorch loop"
    overhead = result.overhead
    if not overhead or "error" in overhead:
        out.append((text, None, "not measured"))
    else:
        ratio = _mean(overhead["engine"]) / _mean(overhead["bare"])
        out.append((text, ratio >= OVERHEAD_TARGET, f"{ratio:.3f} x"))
    return out


def overhead_line(overhead: dict | None) -> str:
    if not overhead:
        return "Engine overhead: not measured."
    if "error" in overhead:
        return f"Engine overhead: failed ({overhead['error']})."
    engine, bare = _mean(overhead["engine"]), _mean(overhead["bare"])
    runs = ", ".join(f"{b:.3f}/{e:.3f}" for b, e in zip(overhead["bare"], overhead["engine"],
                                                        strict=True))
    return (f"Engine overhead ({overhead['shift']} targets, sfda, {overhead['steps']} steps of "
            f"{overhead['batch_size']} slices per timed run, one process, alternating bare and "
            f"engine after a warm-up of each): engine {engine:.3f} steps/s (label-free scoring "
            f"of {overhead['score_slices']} slices every {overhead['score_every']} steps and at "
            f"both ends, checkpoints every "
            f"{overhead['checkpoint_every']}, events to a no-op listener; construction, "
            f"selection and restore included) vs bare PyTorch loop {bare:.3f} steps/s: "
            f"**{engine / bare:.3f} x** (bare/engine per repeat: {runs}).")


def render_markdown(result: BenchResult, command: str,
                    image: str | None = "docs/bench_segmentation.png") -> str:
    """The whole section, markers included. `image`: the plot's path relative to the
    Markdown file (None: no image link)."""
    config, m = result.config, result.machine
    targets = _span(config.targets)
    lines = [
        START_MARKER,
        "## Adaptation on the demo shifts (`uda bench`)",
        "",
        f"    {command}",
        "",
        f"Machine: {m['platform']}, {m['cpu']}, {m['cpu_count']} CPUs "
        f"({m['usable_cpus']} usable, torch threads {m['threads']}), Python {m['python']}, "
        f"torch {m['torch']}, device {m['device']}; run {m['date']}, "
        f"{result.total_s / 60:.1f} min in all.",
        "",
        f"Targets: held-out subjects {targets} of each shift at {config.spacing_mm:g} mm; each "
        "method adapts on them and is scored on them (adapt on your scans, score those "
        "scans). Every method runs with its default settings and number of steps"
        + (f" (here {config.steps} steps)" if config.steps is not None else "")
        + ", the checkpoint chosen by the engine's label-free score; the benchmark tunes "
        "nothing on these subjects. adaptsegnet gets labelled t1 subjects "
        f"{_span(config.source_subjects)}; ddm gets the t1 image of each target subject "
        "(voxel-aligned pairs)" + (" and the labelled t1 subjects" if config.ddm_with_source
                                   else "") + ". Dice: mean over CSF, GM, WM per volume, "
        "averaged over the targets; HD95 likewise, in mm († : a class is missing from some "
        "prediction, so its HD95 is undefined and the mean covers the other classes). "
        "Gap closed = (Dice after - source-only) / (oracle - source-only). Oracle: the same "
        f"network, started from the source weights and fine-tuned on labelled subjects "
        f"{_span(config.oracle_train)} of the shift for {config.oracle_epochs} epoch(s), "
        f"the best epoch chosen on subjects {_span(config.oracle_val)}; its wall s is its "
        "training time. wall s: the whole `run_adaptation` from files to files (read, adapt, "
        "write model and masks) in a fresh process; steps/s: updates per second of the run "
        "loop; peak MB: peak resident memory of that process (MB = 2^20 bytes). Multi-seed "
        "rows: Dice as mean ± sample std over seeds, the other columns as means.",
        "",
    ]
    for shift in result.shifts.values():
        lines += [f"### {shift.shift}", "", *shift_table(shift), ""]
    lines += [overhead_line(result.overhead), "", "Expectations (recorded, not asserted):", ""]
    for text, met, numbers in claims(result):
        state = "not measured" if met is None else ("met" if met else "NOT met")
        lines.append(f"- {text}: **{state}** ({numbers})")
    lines.append("")
    if image:
        lines += [f"![Dice per method and shift]({image})", ""]
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def _span(subjects) -> str:
    subjects = list(subjects)
    if len(subjects) > 2 and subjects == list(range(subjects[0], subjects[-1] + 1)):
        return f"{subjects[0]}-{subjects[-1]}"
    return ",".join(map(str, subjects))


def replace_section(text: str, section: str, start_marker: str = START_MARKER,
                    end_marker: str = END_MARKER) -> str:
    """`text` with the part between the markers (inclusive) replaced by `section`, or with
    `section` appended when the markers are absent."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start >= 0 and end > start:
        tail = text[end + len(end_marker):]
        return text[:start] + section.rstrip("\n") + (tail if tail.strip() else "\n")
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section


def update_benchmarks_file(path: str | os.PathLike, section: str,
                           start_marker: str = START_MARKER, end_marker: str = END_MARKER) -> Path:
    """Write `section` into the Markdown file at `path` (created if missing), atomically,
    replacing what stands between the markers."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(replace_section(old, section, start_marker, end_marker),
                       encoding="utf-8")
    return path


def write_plot(result: BenchResult, path: str | os.PathLike) -> Path:
    """Grouped bars of mean Dice per method per shift (error bars: std over seeds), with the
    source-only Dice (dashed) and the oracle's (solid) as lines across each group; a PNG
    written atomically. Uses matplotlib's Agg canvas directly (no pyplot, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    shifts = list(result.shifts.values())
    methods = []
    for shift in shifts:
        methods += [row.method for row in shift.methods if row.method not in methods]
    width = 0.8 / max(len(methods), 1)
    fig = Figure(figsize=(max(6.0, 2.2 * len(shifts) + 2.5), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{k}" for k in range(len(methods))]
    for k, name in enumerate(methods):
        xs, ys = [], []
        for i, shift in enumerate(shifts):
            row = next((r for r in shift.methods if r.method == name and r.scores), None)
            if row is None:
                continue
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(row.dice)
            if len(row.scores) > 1:  # spread over seeds
                ax.errorbar(xs[-1], row.dice, yerr=row.dice_std, color="black", capsize=3,
                            zorder=4)
        ax.bar(xs, ys, width * 0.9, color=colours[k], label=name, zorder=2)
    for i, shift in enumerate(shifts):
        # label None: no legend entry (matplotlib's stub asks for a str)
        ax.hlines(shift.source_only.dice, i - 0.45, i + 0.45, colors="0.25",
                  linestyles="dashed", zorder=3,
                  label="source only" if i == 0 else None)  # type: ignore[arg-type]
        if shift.oracle is not None:
            ax.hlines(shift.oracle.scores.dice, i - 0.45, i + 0.45, colors="black", zorder=3,
                      label="oracle" if i == 0 else None)  # type: ignore[arg-type]
    ax.set_xticks(range(len(shifts)), [s.shift for s in shifts])
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean Dice (CSF, GM, WM)")
    ax.set_title("Held-out targets: Dice after adaptation (error bars: std over seeds)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    return path
