"""Which label-free score picks good checkpoints? A study on validation subjects.

    .venv/bin/python scripts/study_selection.py RUN_DIR...

Each RUN_DIR is a `uda adapt --reference ...` output on VALIDATION subjects (never the
benchmark's held-out ones): its metrics.jsonl holds, at every scoring step, the label-free
scores and the Dice against the reference labels on the scored slices. For each score this
prints the reference Dice of the step that score would choose, beside step 0 (no adaptation),
the last step and the best step in hindsight (what an oracle choice would get).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from uda_core.engine.config import AUTO_SELECTION, EngineConfig
from uda_core.methods.registry import METHODS
from uda_core.scores.label_free import HIGHER_IS_BETTER, gain


def scored_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reference/dice" in r]


def choice(rows: list[dict], score: str) -> dict:
    """The row a score would choose (ties: the earliest, as the engine does)."""
    key = f"score/{score}"
    sign = 1.0 if HIGHER_IS_BETTER[score] else -1.0
    candidates = [r for r in rows if key in r]
    return max(candidates, key=lambda r: sign * r[key]) if candidates else {}


def engine_rule(rows: list[dict], method: str, config: EngineConfig,
                order: tuple[str, ...] = AUTO_SELECTION) -> dict:
    """The row the engine's default rule would keep: select_by auto (the first of `order`,
    by default AUTO_SELECTION, the method's loss does not optimise), a step replacing step 0
    only when that score gains more than min_gain and no guard score (guard_by,
    comma-separated) loses more than guard_tolerance."""
    circular = set(METHODS[method].circular_scores)
    name = next(n for n in order if f"score/{n}" in rows[0] and n not in circular)
    guards = [g for g in config.guard_names
              if g != name and g not in circular and f"score/{g}" in rows[0]]
    first, best = rows[0], rows[0]
    sign = 1.0 if HIGHER_IS_BETTER[name] else -1.0
    for row in rows[1:]:
        if sign * row[f"score/{name}"] <= sign * best[f"score/{name}"]:
            continue
        if not gain(name, first[f"score/{name}"], row[f"score/{name}"],
                    HIGHER_IS_BETTER[name]) > config.min_gain:
            continue
        if any(gain(g, first[f"score/{g}"], row[f"score/{g}"], HIGHER_IS_BETTER[g])
               < -config.guard_tolerance for g in guards):
            continue
        best = row
    return {**best, "rule_score": name}


def method_of(run_dir: Path) -> str:
    """The method of a run folder (its run.json)."""
    return json.loads((run_dir / "run.json").read_text())["method"]


def rule_table(run_dirs: list[str], config: EngineConfig | None = None,
               order: tuple[str, ...] = AUTO_SELECTION, label: str = "Engine default rule") -> None:
    """Reference Dice (scored slices) of step 0, a rule's choice (by default the engine's)
    and the best in hindsight, per run, and their means."""
    config = config or EngineConfig()
    print(f"\n{label} (select_by auto in the order {', '.join(order[:3])}, ..., guard "
          f"{config.guard_by or 'none'} tolerance {config.guard_tolerance}, min_gain "
          f"{config.min_gain}):\n")
    print("| run | step 0 | rule's choice | best in hindsight | last |")
    print("|---|---|---|---|---|")
    sums = [[], [], [], []]
    for run_dir in map(Path, run_dirs):
        rows = scored_rows(run_dir)
        chosen = engine_rule(rows, method_of(run_dir), config, order)
        best = max(rows, key=lambda r: r["reference/dice"])
        values = [rows[0]["reference/dice"], chosen["reference/dice"], best["reference/dice"],
                  rows[-1]["reference/dice"]]
        for total, v in zip(sums, values, strict=True):
            total.append(v)
        print(f"| {run_dir.name} | {values[0]:.3f} | {values[1]:.3f} (step {chosen['step']}, "
              f"{chosen['rule_score']}) | {values[2]:.3f} (step {best['step']}) | "
              f"{values[3]:.3f} |")
    means = " | ".join(f"{sum(v) / len(v):.3f}" for v in sums)
    print(f"| **mean** | {means} |")


#: Orders of select_by auto compared by order_table (the first is the engine's default).
ORDERS = {"prior_kl first (the default)": AUTO_SELECTION,
          "brain_prior_kl first": ("brain_prior_kl", "prior_kl", "consistency", "info_max"),
          "consistency first": ("consistency", "prior_kl", "info_max", "mutual_info"),
          "intensity_fit first": ("intensity_fit", "prior_kl", "consistency", "info_max")}
#: Guard lists compared by order_table (the engine's default first).
GUARDS = (EngineConfig().guard_by, "consistency,intensity_fit",
          "consistency,brain_prior_kl,intensity_fit", "")


def order_table(run_dirs: list[str]) -> None:
    """Per order of ORDERS and guard list of GUARDS: the mean gap to the best step in
    hindsight and the worst harm (step 0's Dice minus the kept step's). A row leaves out the
    runs that lack its first score or a guard (intensity_fit is logged since session 15)."""
    print("\n| order of select_by auto | guard | runs | mean gap | worst harm | harmed runs |")
    print("|---|---|---|---|---|---|")
    for label, order in ORDERS.items():
        for config in (EngineConfig(guard_by=g) for g in GUARDS):
            gaps, harms, harmed = [], [], []
            for run_dir in map(Path, run_dirs):
                rows = scored_rows(run_dir)
                if any(f"score/{n}" not in rows[0] for n in (order[0], *config.guard_names)):
                    continue   # a row compares only the runs that logged every score it names
                kept = engine_rule(rows, method_of(run_dir), config, order)["reference/dice"]
                gaps.append(max(r["reference/dice"] for r in rows) - kept)
                harms.append(rows[0]["reference/dice"] - kept)
                if harms[-1] > 0.005:
                    harmed.append(f"{run_dir.parent.name}/{run_dir.name} {-harms[-1]:+.3f}")
            if not gaps:
                continue
            print(f"| {label} | {config.guard_by or 'none'} | {len(gaps)} | "
                  f"{sum(gaps) / len(gaps):.4f} | "
                  f"{max(harms):+.3f} | {', '.join(harmed) or '-'} |")


def main(run_dirs: list[str]) -> None:
    scores = list(HIGHER_IS_BETTER)
    print("| run | step 0 | last | best in hindsight | " + " | ".join(scores) + " |")
    print("|---|" + "---|" * (3 + len(scores)))
    totals = {s: [] for s in ["step 0", "last", "best", *scores]}
    for run_dir in map(Path, run_dirs):
        rows = scored_rows(run_dir)
        first, last = rows[0], rows[-1]
        best = max(rows, key=lambda r: r["reference/dice"])
        cells = [f"{first['reference/dice']:.3f}", f"{last['reference/dice']:.3f}",
                 f"{best['reference/dice']:.3f} (step {best['step']})"]
        totals["step 0"].append(first["reference/dice"])
        totals["last"].append(last["reference/dice"])
        totals["best"].append(best["reference/dice"])
        for score in scores:
            row = choice(rows, score)
            if row:
                totals[score].append(row["reference/dice"])
                cells.append(f"{row['reference/dice']:.3f} (step {row['step']})")
            else:
                cells.append("-")
        print(f"| {run_dir.name} | " + " | ".join(cells) + " |")
    means = [f"{sum(v) / len(v):.3f}" if v else "-" for v in totals.values()]
    print("| **mean** | " + " | ".join(means) + " |")
    rule_table(run_dirs)
    rule_table(run_dirs, EngineConfig(guard_by="consistency"), ORDERS["intensity_fit first"],
               "Candidate (session 15)")
    order_table(run_dirs)


if __name__ == "__main__":
    main(sys.argv[1:])
