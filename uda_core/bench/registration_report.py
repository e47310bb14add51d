"""The registration benchmark's report: the BENCHMARKS.md section (between its own markers,
never touching the segmentation section), the recorded targets and the overlay picture."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from uda_core.bench.registration import MODALITY, RegBenchResult, RegRow
from uda_core.bench.report import replace_section, update_benchmarks_file
from uda_core.exports.overlay import checkerboard
from uda_core.io.atomic import atomic_output

START_MARKER = "<!-- bench:registration:start -->"
END_MARKER = "<!-- bench:registration:end -->"

__all__ = ["END_MARKER", "START_MARKER", "checkerboard", "claims", "render_reg_markdown",
           "replace_reg_section", "update_reg_section", "write_overlay"]


def _num(value, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _cell(row: RegRow, key: str, digits: int, scale: float = 1.0) -> str:
    text = _num(row.mean(key) * scale, digits)
    if len(row.scores) > 1:
        text += f" ± {_num(row.std(key) * scale, digits)}"
    return text


def table_lines(result: RegBenchResult, shift: str) -> list[str]:
    """The Markdown table of one shift: before registration, then every method."""
    rows = result.rows[shift]
    lines = ["| method | seeds | accuracy | EPE (mm) | warped Dice | folding (%) |",
             "|---|---|---|---|---|---|"]
    if rows and rows[0].scores:
        first = rows[0].scores[0]
        lines.append(f"| before registration | - | {_num(first['accuracy_identity'], 3)} | "
                     f"{_num(first['epe_identity_mm'], 2)} | {_num(first['dice_before'], 3)} "
                     "| 0 |")
    for row in rows:
        if not row.scores:
            lines.append(f"| {row.method} | - | failed | | | |")
            continue
        lines.append(" | ".join([
            f"| {row.method}", ",".join(map(str, row.seeds)), _cell(row, "accuracy", 3),
            _cell(row, "epe_mm", 2), _cell(row, "dice_after", 3),
            _cell(row, "folding", 2, 100.0)]) + " |")
    return lines


def _ordering(result: RegBenchResult, shift: str, names: tuple[str, str, str], what: str):
    """'pemd > swd > none' on one shift for the three rows `names` (best first), on accuracy
    and warped Dice; None when a row is missing or failed."""
    found = [result.row(shift, n) for n in names]
    rows = [r for r in found if r is not None and r.scores]
    if len(rows) < len(names):
        return None
    a = [r.mean("accuracy") for r in rows]
    d = [r.mean("dice_after") for r in rows]
    met = a[0] > a[1] > a[2] and d[0] > d[1] > d[2]
    return (f"T1->{shift.upper()}: {' > '.join(names)} ({what}) in accuracy and warped Dice", met,
            f"accuracy {a[0]:.3f} / {a[1]:.3f} / {a[2]:.3f}, Dice {d[0]:.3f} / {d[1]:.3f} / "
            f"{d[2]:.3f}")


def claims(result: RegBenchResult) -> list[tuple[str, bool | None, str]]:
    """The issue's targets, per shift, as (statement, met? (None: not measured), numbers);
    recorded, never asserted."""
    out: list[tuple[str, bool | None, str]] = []
    for shift in result.rows:
        label = f"T1->{shift.upper()}"
        for names, what in ((("mcd-pemd", "mcd-swd", "none"), "networks alone"),
                            (("mcd-pemd+io", "mcd-swd+io", "io"), "with the instance "
                             "optimisation")):
            found = _ordering(result, shift, names, what)
            if found:
                out.append(found)
        pemd, none = result.row(shift, "mcd-pemd"), result.row(shift, "none")
        if pemd and pemd.scores and none and none.scores:
            identity = none.scores[0]["accuracy_identity"]
            out.append((f"(observation) {label}: mcd-pemd beats no registration at all (zero "
                        "displacement) in accuracy", pemd.mean("accuracy") > identity,
                        f"{pemd.mean('accuracy'):.3f} vs {identity:.3f}"))
        refined = next((r for r in (result.row(shift, "mcd-pemd+io"), result.row(shift, "io"))
                        if r is not None and r.scores), None)   # the `uda reg apply` default
        sitk = result.row(shift, "SimpleITK")
        if refined and sitk and sitk.scores:
            for key, name, better in (("accuracy", "accuracy", 1), ("epe_mm", "EPE", -1),
                                      ("dice_after", "warped Dice", 1)):
                a, b = refined.mean(key), sitk.mean(key)
                out.append((f"{label}: {refined.method} {name} at least SimpleITK's",
                            better * (a - b) >= 0, f"{a:.3f} vs {b:.3f}"))
            folding = refined.mean("folding") * 100.0
            out.append((f"{label}: {refined.method} folding <= 0.1 %", folding <= 0.1,
                        f"{folding:.2f} %"))
    timing = result.timing
    if timing:
        ratio = timing["sitk_s"] / timing["learned_s"]
        out.append(("learned registration of one 2D pair >= 50x faster than SimpleITK "
                    "(network alone)", ratio >= 50,
                    f"{ratio:.0f}x ({timing['learned_s'] * 1000:.1f} ms vs "
                    f"{timing['sitk_s'] * 1000:.0f} ms)"))
        if timing.get("learned_io_s"):
            ratio = timing["sitk_s"] / timing["learned_io_s"]
            out.append(("the same with the instance optimisation (the `uda reg apply` "
                        "default)", ratio >= 50,
                        f"{ratio:.0f}x ({timing['learned_io_s'] * 1000:.1f} ms)"))
    return out


def render_reg_markdown(result: RegBenchResult, command: str,
                        image: str | None = "docs/bench_registration.png") -> str:
    """The whole BENCHMARKS.md section, markers included."""
    config, m = result.config, result.machine
    subjects = ",".join(map(str, config.subjects))
    lines = [START_MARKER, "## Registration adapted across modalities (`uda reg bench`)", "",
             f"Command: `{command}` ({result.wall_s / 60:.1f} min on {m.get('cpus')} CPUs, "
             f"{m.get('processor')}, {m.get('platform')}; torch {m.get('torch')} on "
             f"{m.get('device')} with {m.get('threads')} thread(s); SimpleITK 1 thread).", "",
             f"Model `{config.model}` (trained on T1-T1 pairs). Pairs: T1 fixed, the other "
             f"modality moving, demo subjects {subjects}, one pair per {config.slice_every} "
             "head slices, the moving slice deformed by a known random smooth field (seed "
             f"{config.pair_seed}). "
             f"MCD runs: {config.steps} steps on the same subjects' slices with fresh random "
             f"fields (the evaluation fields are never seen), seeds "
             f"{','.join(map(str, config.seeds))} (mean ± std); settings "
             f"{config.method_settings or 'default'}"
             f"{'; engine ' + str(config.engine_settings) if config.engine_settings else ''}. "
             "Accuracy: share of head control points whose predicted label is the true "
             "quantised displacement; EPE: endpoint error at those points; warped Dice: mean "
             "over CSF, GM, WM; folding: head pixels with Jacobian determinant <= 0.", ""]
    from uda_core.runs.adapt_registration import DEFAULT_ENGINE_SETTINGS
    select_by = config.engine_settings.get("select_by", DEFAULT_ENGINE_SETTINGS["select_by"])
    for shift in result.rows:
        lines += [f"### T1 -> {shift} ({MODALITY.get(shift, shift)}), {result.pairs[shift]} "
                  "pairs", ""] + table_lines(result, shift) + [""]
        notes = [f"{r.method}: step kept by {select_by} {r.chosen_steps}; engine status "
                 f"{', '.join(r.statuses)}"
                 for r in result.rows[shift] if r.chosen_steps]
        notes += [f"{r.method} {e}" for r in result.rows[shift] for e in r.errors]
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    timing = result.timing
    if timing:
        lines += [f"Time per 2D pair (T1 -> {timing['shift']}, median of {timing['pairs']} "
                  "pairs registered one at a time after all runs had finished): learned "
                  f"{timing['learned_s'] * 1000:.1f} ms (forward + warp, {m.get('device')}, "
                  f"{m.get('threads')} thread(s)), SimpleITK {timing['sitk_s'] * 1000:.0f} ms "
                  f"(1 thread, {config.sitk_iterations} iterations per level): "
                  f"**{timing['sitk_s'] / timing['learned_s']:.0f}x**. The learned pairs in "
                  f"one batch: {timing['learned_batched_s'] * 1000:.1f} ms per pair "
                  f"({timing['sitk_s'] / timing['learned_batched_s']:.0f}x)."
                  + (f" With instance optimisation (io): {timing['learned_io_s'] * 1000:.1f} "
                     f"ms per pair ({timing['sitk_s'] / timing['learned_io_s']:.0f}x)."
                     if timing.get("learned_io_s") else ""), ""]
    found = claims(result)
    if found:
        lines += ["Targets (recorded, not asserted):", ""]
        for text, met, numbers in found:
            mark = "not measured" if met is None else ("met" if met else "missed")
            lines.append(f"- {text}: **{mark}** ({numbers})")
        lines.append("")
    if image:
        lines += [f"![checkerboards of fixed T1 and warped moving image]({image})", ""]
    lines.append(END_MARKER)
    return "\n".join(lines) + "\n"


def replace_reg_section(text: str, section: str) -> str:
    """`text` with its registration section (markers included) replaced by `section`, or
    with `section` appended when there is none; the rest is left as it is."""
    return replace_section(text, section, START_MARKER, END_MARKER)


def update_reg_section(path: str | os.PathLike, section: str) -> Path:
    """Write `section` into the Markdown file (created if missing), atomically."""
    return update_benchmarks_file(path, section, START_MARKER, END_MARKER)


def write_overlay(result: RegBenchResult, path: str | os.PathLike) -> Path:
    """Checkerboards of the fixed T1 and the warped moving slice of one pair (the first
    shift): before registration, no adaptation, MCD pemd (first seed), pemd + the instance
    optimisation (the `uda reg apply` default) and SimpleITK."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    shift = next(iter(result.overlay))
    panels = [(k, t) for k, t in (("before", "before registration"),
                                  ("none", "no adaptation"), ("pemd", "MCD pemd"),
                                  ("pemd+io", "pemd + io (default)"),
                                  ("sitk", "SimpleITK")) if k in result.overlay[shift]]
    fig = Figure(figsize=(3.0 * len(panels), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate(panels):
        images = result.overlay[shift][key]
        ax = fig.add_subplot(1, len(panels), i + 1)
        board = checkerboard(images["fixed"], images["warped"], tile_vox=8)
        ax.imshow(np.rot90(board), cmap="gray")
        ax.set_title(f"T1 / {shift}: {title}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    return path
