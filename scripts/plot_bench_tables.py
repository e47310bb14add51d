"""The `uda bench` picture from printed sections, for a benchmark run as several processes.

    PYTHONPATH=. python scripts/plot_bench_tables.py OUT.png SECTION.md [SECTION.md ...]

`uda bench --no-write` prints its Markdown section; when the shifts were run in separate
processes (one per core), no single process holds every shift, so none can draw the picture
that `--write` draws. This reads the shifts' tables back ("### <shift>" headings, the Dice
after column; seeds' spread as written, "0.712 ± 0.010") and draws it with the benchmark's
own `write_plot`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

from uda_core.bench.report import write_plot

_NUMBER = re.compile(r"(-?\d+\.\d+)(?:\s*±\s*(\d+\.\d+))?")


def shifts_of(text: str) -> dict[str, SimpleNamespace]:
    """{shift: an object with what write_plot reads} from one printed section."""
    shifts: dict[str, SimpleNamespace] = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        name = block.split(None, 1)[0]
        rows = [line.strip().strip("|").split("|") for line in block.splitlines()
                if line.startswith("| ") and not line.startswith("| method")]
        shift = SimpleNamespace(shift=name, methods=[], source_only=None, oracle=None)
        for cells in rows:
            method = cells[0].strip()
            before, after = _NUMBER.search(cells[2]), _NUMBER.search(cells[3])
            if method == "source only" and before:
                shift.source_only = SimpleNamespace(dice=float(before.group(1)))
            elif method.startswith("oracle") and after:
                shift.oracle = SimpleNamespace(scores=SimpleNamespace(dice=float(after.group(1))))
            elif after:
                spread = after.group(2)
                shift.methods.append(SimpleNamespace(
                    method=method, dice=float(after.group(1)),
                    dice_std=float(spread) if spread else 0.0,
                    scores=[None, None] if spread else [None]))
        if shift.source_only is not None:
            shifts[name] = shift
    return shifts


def main(out: str, sections: list[str]) -> None:
    shifts: dict[str, SimpleNamespace] = {}
    for section in sections:
        shifts.update(shifts_of(Path(section).read_text(encoding="utf-8")))
    path = write_plot(SimpleNamespace(shifts=shifts), out)  # type: ignore[arg-type]
    print(f"{path}: {', '.join(shifts)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
