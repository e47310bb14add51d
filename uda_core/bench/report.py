"""The benchmark's Markdown section, its recorded claims, its plot and BENCHMARKS.md update."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from uda_core.bench.runner import (
    BENCH_METHODS,
    T1W_SHIFTS,
    BenchResult,
    MethodResult,
    ShiftResult,
    is_source_free,
    split_method,
)
from uda_core.io.atomic import atomic_output

START_MARKER = "<!-- bench:segmentation:start -->"
END_MARKER = "<!-- bench:segmentation:end -->"
COLUMNS = ("method", "seeds", "Dice before", "Dice after", "HD95 before (mm)",
           "HD95 after (mm)", "gap closed", "wall s", "steps/s", "peak MB")
DEFAULT_RUN_BUDGET_S = 300.0    # "the default adaptation of 3 targets within 5 min"
OVERHEAD_TARGET = 0.95
SOURCE_FREE_GAP = 0.5           # the best source-free row closes half the gap on T1w shifts
DDM_T2_GAP = 0.9                # ddm with aligned pairs on t2
HARM_TOLERANCE = 0.005          # Dice a chosen checkpoint may lose to source-only
CHOICE_TOLERANCE = 0.01         # mean (best in hindsight - label-free choice), scored slices


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


def ordered(rows: list[MethodResult]) -> list[MethodResult]:
    """The rows in BENCH_METHODS order; names outside it after them, as they came."""
    def rank(row: MethodResult) -> int:
        return BENCH_METHODS.index(row.method) if row.method in BENCH_METHODS else len(
            BENCH_METHODS)
    return sorted(rows, key=rank)  # stable: unknown names keep their order


def choice_note(rows: list[MethodResult]) -> str | None:
    """The note comparing the label-free choice with the best checkpoint in hindsight on the
    scored slices (means over seeds), or None when no row recorded a reference Dice."""
    parts = []
    for row in rows:
        if not any(math.isfinite(v) for v in row.choice_dice + row.hindsight_dice):
            continue
        parts.append(f"{row.method} {_num(_mean(row.choice_dice), 3)}/"
                     f"{_num(_mean(row.hindsight_dice), 3)} (step 0 "
                     f"{_num(_mean(row.step0_dice), 3)})")
    if not parts:
        return None
    return ("label-free choice vs best in hindsight (scored slices, reference Dice; "
            "evaluation only): " + "; ".join(parts))


def kept_note(rows: list[MethodResult]) -> str | None:
    """Which runs kept the source weights (standardise trains nothing, so it is left out);
    None when no row ran."""
    ran = [row for row in rows if row.kept_source and split_method(row.method)[0]
           != "standardise"]
    if not ran:
        return None
    kept = [f"{row.method} seed {seed}" for row in ran
            for seed, kept in zip(row.seeds, row.kept_source, strict=True) if kept]
    return ("kept the source weights (no step confidently better by the label-free score): "
            + (", ".join(kept) if kept else "none"))


def shift_table(shift: ShiftResult) -> list[str]:
    """Markdown lines: the table of one shift (source only, methods in BENCH_METHODS order,
    oracle) and its notes."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    before = shift.source_only
    lines.append("| " + " | ".join(["source only", "-", _num(before.dice, 3), "-",
                                    _hd95(before), "-", "0 %", "-", "-", "-"]) + " |")
    rows = ordered(shift.methods)
    for row in rows:
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
              for row in rows if row.chosen_steps]
    if chosen:
        notes.append("step chosen by the label-free score / steps run: " + "; ".join(chosen))
    last = [f"{row.method} {_num(_mean(row.last_dice), 3)}" for row in rows
            if row.last_dice]
    if last:
        notes.append("Dice with the last step's weights instead of the chosen ones (a "
                     "diagnosis of the choice, never used for it): " + "; ".join(last))
    notes += [n for n in (choice_note(rows), kept_note(rows)) if n is not None]
    for row in rows:
        notes.extend(f"{row.method} {e}" for e in row.errors)
    return lines + ([""] + [f"- {n}" for n in notes] if notes else [])


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %" if math.isfinite(value) else "n/a"


def _ran(shift: ShiftResult) -> list[MethodResult]:
    return [row for row in ordered(shift.methods) if row.scores]


def claims(result: BenchResult) -> list[tuple[str, bool | None, str]]:
    """The issue's expectations, each as (statement, met? (None: not measured), numbers).

    Recorded, never asserted: a benchmark reports what happened.
    """
    out: list[tuple[str, bool | None, str]] = []

    # 1. the best source-free row closes half the gap on every T1w shift
    t1w = [result.shifts[s] for s in T1W_SHIFTS if s in result.shifts]
    text = (f"on every T1w shift ({', '.join(s.shift for s in t1w) or 'none run'}): the best "
            f"source-free method closes at least {100 * SOURCE_FREE_GAP:.0f} % of the "
            "source-only -> oracle gap")
    parts, verdicts = [], []
    for shift in t1w:
        free = [row for row in _ran(shift) if is_source_free(row.method)]
        best = max(free, key=lambda row: row.dice, default=None)
        gap = shift.gap_closed(best.dice) if best is not None else float("nan")
        parts.append(f"{shift.shift} {best.method if best else 'none'} {_pct(gap)}")
        verdicts.append(gap >= SOURCE_FREE_GAP if math.isfinite(gap) else None)
    out.append((text, _all(verdicts), ", ".join(parts) if parts else "not run"))

    # 2. sfda improves on every shift where it ran
    sfda = [(shift, row) for shift in result.shifts.values() for row in _ran(shift)
            if row.method == "sfda"]
    out.append(("sfda: mean Dice after > before on every shift where it ran",
                all(row.dice > shift.source_only.dice for shift, row in sfda) if sfda else None,
                ", ".join(f"{shift.shift} {row.dice:.3f} vs {shift.source_only.dice:.3f}"
                          for shift, row in sfda) or "not run"))

    # 3. no chosen checkpoint harms
    rows = [(shift, row) for shift in result.shifts.values() for row in _ran(shift)]
    offenders = [f"{shift.shift} {row.method} {row.dice:.3f} vs {shift.source_only.dice:.3f}"
                 for shift, row in rows if row.dice < shift.source_only.dice - HARM_TOLERANCE]
    out.append((f"no method's chosen checkpoint is worse than source-only by more than "
                f"{HARM_TOLERANCE:g} Dice on any shift", not offenders if rows else None,
                ("offenders: " + ", ".join(offenders)) if offenders
                else (f"none of {len(rows)} rows" if rows else "not run")))

    # 4. the label-free choice is close to the best in hindsight
    misses = [h - c for _, row in rows
              for c, h in zip(row.choice_dice, row.hindsight_dice, strict=True)
              if math.isfinite(c) and math.isfinite(h)]
    miss = _mean(misses)
    out.append((f"the label-free choice is on average within {CHOICE_TOLERANCE:g} Dice of the "
                "best checkpoint in hindsight (scored slices)",
                miss <= CHOICE_TOLERANCE if misses else None,
                f"mean best - chosen {miss:.4f} over {len(misses)} runs, worst "
                f"{max(misses):.4f}" if misses else "not measured"))

    # 5. ddm on t2
    t2 = result.shifts.get("t2")
    ddm = next((row for row in _ran(t2) if row.method == "ddm"), None) if t2 else None
    gap = t2.gap_closed(ddm.dice) if ddm is not None and t2 is not None else float("nan")
    out.append((f"t2 (aligned pairs): ddm closes at least {100 * DDM_T2_GAP:.0f} % of the gap",
                gap >= DDM_T2_GAP if math.isfinite(gap) else None,
                _pct(gap) if math.isfinite(gap) else ("not run" if ddm is None
                                                       else "no oracle gap to close")))

    # 6. the timed default run
    run = result.default_run
    name = run["method"] if run else "the default method"
    text = (f"the default run ({name}, its default steps and settings) of 3 target volumes "
            f"finishes within {DEFAULT_RUN_BUDGET_S / 60:.0f} min")
    if not run or "error" in run or run.get("volumes") != 3:
        out.append((text, None, f"failed: {run['error']}" if run and "error" in run
                    else "not measured in this configuration"))
    else:
        out.append((text, run["wall_s"] <= DEFAULT_RUN_BUDGET_S,
                    f"{run['wall_s']:.0f} s on {run['shift']}, {run['steps']} steps, files to "
                    "files in a fresh process"))

    # 7. engine overhead
    text = f"engine overhead: engine steps/s >= {OVERHEAD_TARGET:.2f} x a bare PyTorch loop"
    overhead = result.overhead
    if not overhead or "error" in overhead:
        out.append((text, None, "not measured"))
    else:
        ratio = _mean(overhead["engine"]) / _mean(overhead["bare"])
        out.append((text, ratio >= OVERHEAD_TARGET, f"{ratio:.3f} x"))
    return out


def _all(verdicts: list[bool | None]) -> bool | None:
    """False when any verdict is False; None when none, or some, were measured; else True."""
    if any(v is False for v in verdicts):
        return False
    return True if verdicts and all(v is True for v in verdicts) else None


def overhead_line(overhead: dict | None) -> str:
    if not overhead:
        return "Engine overhead: not measured."
    if "error" in overhead:
        return f"Engine overhead: failed ({overhead['error']})."
    engine, bare = _mean(overhead["engine"]), _mean(overhead["bare"])
    runs = ", ".join(f"{b:.3f}/{e:.3f}" for b, e in zip(overhead["bare"], overhead["engine"],
                                                        strict=True))
    volumes = overhead.get("volumes")
    where = f"{volumes} {overhead['shift']} targets" if volumes else f"{overhead['shift']} targets"
    return (f"Engine overhead ({where}, sfda, {overhead['steps']} steps of "
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
        "scans). Shifts from the t1 source: protocol, mprage and highfield keep its "
        "T1 weighting (other scanners and sequences; mprage and highfield are stored in other "
        "orientations than t1, so ddm has no voxel-aligned pairs there); t2 and pd change the "
        "contrast. Every method runs with its default settings and number of steps"
        + (f" (here {config.steps} steps)" if config.steps is not None else "")
        + ", the checkpoint chosen by the engine's label-free score (which may keep the "
        "source weights: 'do no harm'); the benchmark tunes nothing on these subjects. "
        "standardise corrects each target's bias field (N4) and matches its intensity "
        "quantiles to the source's, when the label-free check says it scores better, and "
        "trains nothing; a '+std' row runs its method on targets standardised that way first; both "
        "run only on the T1w shifts. adaptsegnet gets labelled t1 subjects "
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
        "rows: Dice as mean ± sample std over seeds, the other columns as means. "
        "Scored-slices numbers (the notes' 'choice vs best in hindsight'): each run also gets "
        "the targets' labels as a reference, which the engine scores on the same slices as "
        "its label-free score at every scoring (metrics.jsonl, reference/dice) and never "
        "uses; they show how far the label-free choice of checkpoint is from the best one "
        "in hindsight. The default-run time: "
        + (f"{config.default_method} with its default steps and engine settings on the first "
           f"3 targets of the first T1w shift, no reference, timed from files to files in a "
           "fresh process" if config.default_method else "not run")
        + "; the engine overhead is measured on the same 3 volumes.",
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
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    shifts = list(result.shifts.values())
    methods: list[str] = []
    for shift in shifts:
        methods += [row.method for row in ordered(shift.methods) if row.method not in methods]
    methods = [r.method for r in ordered([MethodResult(m) for m in methods])]
    width = 0.8 / max(len(methods), 1)
    fig = Figure(figsize=(max(6.0, 2.2 * len(shifts) + 2.5), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # matplotlib's 10-colour cycle repeats from the 11th method: tab20 beyond ten
    colours = ([f"C{k}" for k in range(len(methods))] if len(methods) <= 10
               else [matplotlib.colormaps["tab20"](k % 20) for k in range(len(methods))])
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
    # from 0.1 below the lowest bar or line (rounded down to 0.1): differences of 0.01-0.03
    # between methods vanish on a 0-1 axis
    values = [row.dice for shift in shifts for row in shift.methods if row.scores]
    values += [shift.source_only.dice for shift in shifts]
    values += [shift.oracle.scores.dice for shift in shifts if shift.oracle is not None]
    finite = [v for v in values if math.isfinite(v)]
    low = max(0.0, math.floor((min(finite) - 0.1) * 10) / 10) if finite else 0.0
    ax.set_ylim(low, 1)
    ax.set_ylabel("mean Dice (CSF, GM, WM)")
    ax.set_title("Held-out targets: Dice after adaptation (error bars: std over seeds)",
                 fontsize="medium")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    return path
