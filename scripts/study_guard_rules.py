"""Checkpoint rules compared on the rows of scripts/study_checkpoint_scores.py.

    .venv/bin/python scripts/study_guard_rules.py SCORES.jsonl

For each run (validation subjects only) and each rule: the reference Dice on the scored
slices of the step the rule keeps, its distance to the best step in hindsight ("gap") and
how much worse than step 0 it is ("harm"). A rule sees only the label-free columns.
Prints two markdown tables: the reference Dice at every scored step of each run, then per
rule and run the chosen Dice (step), each rule's mean gap and worst harm.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable

Row = dict
Rule = Callable[[list[Row]], Row]


def select_above_step0(score: str) -> Rule:
    """The best row by `score` among those strictly above step 0's (else step 0): the
    engine's current rule for sfda when `score` is consistency (min_gain 0)."""
    def rule(rows: list[Row]) -> Row:
        best = rows[0]
        for row in rows[1:]:
            if row[score] > best[score]:
                best = row
        return best
    return rule


def noise_guard(select: str, k: float) -> Rule:
    """The best row by `select` (or the last, for "last") among the rows whose consistency
    is not below step 0's by more than k standard errors of step 0's per-slice consistency
    and whose `select` beats step 0's; else step 0."""
    def rule(rows: list[Row]) -> Row:
        first = rows[0]
        floor = first["consistency"] - k * first["consistency_se"]
        passing = [r for r in rows[1:] if r["consistency"] >= floor
                   and (select == "last" or r[select] > first[select])]
        if not passing:
            return first
        return passing[-1] if select == "last" else max(passing, key=lambda r: r[select])
    return rule


def fixed_guard(select: str, tolerance: float) -> Rule:
    """Like noise_guard with a fixed consistency tolerance."""
    def rule(rows: list[Row]) -> Row:
        first = rows[0]
        passing = [r for r in rows[1:] if r["consistency"] >= first["consistency"] - tolerance
                   and (select == "last" or r[select] > first[select])]
        if not passing:
            return first
        return passing[-1] if select == "last" else max(passing, key=lambda r: r[select])
    return rule


def rank_vote(scores: tuple[str, ...]) -> Rule:
    """The row with the best mean rank over `scores` (higher is better for each); ties go
    to the earliest, so step 0 is kept unless a step out-ranks it."""
    def rule(rows: list[Row]) -> Row:
        mean_rank = [0.0] * len(rows)
        for s in scores:
            order = sorted(range(len(rows)), key=lambda i: rows[i][s])
            for rank, i in enumerate(order):
                mean_rank[i] += rank / len(scores)
        return rows[max(range(len(rows)), key=lambda i: (mean_rank[i], -i))]
    return rule


RULES: dict[str, Rule] = {
    "step 0": lambda rows: rows[0],
    "last": lambda rows: rows[-1],
    "current (consistency above step 0)": select_above_step0("consistency"),
    "consistency_other above step 0": select_above_step0("consistency_other"),
    "views above step 0": select_above_step0("views"),
    "teacher above step 0": select_above_step0("teacher"),
    "teacher_other above step 0": select_above_step0("teacher_other"),
    "teacher, guard 1 SE": noise_guard("teacher", 1.0),
    "teacher, guard 2 SE": noise_guard("teacher", 2.0),
    "last, guard 1 SE": noise_guard("last", 1.0),
    "last, guard 2 SE": noise_guard("last", 2.0),
    "last, guard 0.005": fixed_guard("last", 0.005),
    "rank vote (consistency, consistency_other, views, teacher)":
        rank_vote(("consistency", "consistency_other", "views", "teacher")),
}


def main(path: str) -> None:
    runs: dict[str, list[Row]] = defaultdict(list)
    for line in open(path):
        row = json.loads(line)
        runs[row["run"]].append(row)
    names = sorted(runs)
    steps = sorted({r["step"] for rows in runs.values() for r in rows})
    print("| run | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for n in names:
        dice = {r["step"]: r["dice_scored"] for r in runs[n]}
        print(f"| {n} | " + " | ".join(f"{dice[s]:.3f}" if s in dice else "-" for s in steps)
              + " |")
    print()
    print("| rule | " + " | ".join(names) + " | mean gap | worst harm |")
    print("|---|" + "---|" * (len(names) + 2))
    best = {n: max(r["dice_scored"] for r in runs[n]) for n in names}
    print("| best in hindsight | " + " | ".join(
        f"{best[n]:.3f} ({max(runs[n], key=lambda r: r['dice_scored'])['step']})"
        for n in names) + " | - | - |")
    for label, rule in RULES.items():
        cells, gaps, harms = [], [], []
        for n in names:
            rows = sorted(runs[n], key=lambda r: r["step"])
            chosen = rule(rows)
            cells.append(f"{chosen['dice_scored']:.3f} ({chosen['step']})")
            gaps.append(best[n] - chosen["dice_scored"])
            harms.append(rows[0]["dice_scored"] - chosen["dice_scored"])
        print(f"| {label} | " + " | ".join(cells)
              + f" | {sum(gaps) / len(gaps):.4f} | {max(harms):+.4f} |")


if __name__ == "__main__":
    main(sys.argv[1])
