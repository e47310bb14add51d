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

from uda_core.scores.label_free import HIGHER_IS_BETTER


def scored_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reference/dice" in r]


def choice(rows: list[dict], score: str) -> dict:
    """The row a score would choose (ties: the earliest, as the engine does)."""
    key = f"score/{score}"
    sign = 1.0 if HIGHER_IS_BETTER[score] else -1.0
    candidates = [r for r in rows if key in r]
    return max(candidates, key=lambda r: sign * r[key]) if candidates else {}


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


if __name__ == "__main__":
    main(sys.argv[1:])
