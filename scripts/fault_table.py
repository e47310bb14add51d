"""The fault-injection table for BENCHMARKS.md: kill points tried / torn files found / resumes
that finished (and equal an uninterrupted run), per command.

    PYTHONPATH=. .venv/bin/python scripts/fault_table.py [WORK_DIR] [--json FILE]

Runs tests/faults/harness.py's campaign (the kill points of the slow test
tests/faults/test_kill.py::test_many_kill_points): SIGKILL at every n-th write moment of
`uda adapt`, `uda reg adapt` and `uda predict` on tiny data, plus a few at random times.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests.faults import harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", help="work folder (default: a temporary one)")
    parser.add_argument("--json", help="also write every outcome as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)   # as the children (OMP_NUM_THREADS=1): the same arithmetic
    work = Path(args.work or tempfile.mkdtemp(prefix="uda-faults-"))
    scenarios = harness.make_scenarios(work / "data")
    rows, everything = [], {}
    for name, every, timed in harness.CAMPAIGN:
        outcomes = harness.campaign(scenarios[name], work, every, timed)
        everything[name] = [dataclasses.asdict(o) for o in outcomes]
        killed = [o for o in outcomes if o.killed]
        rows.append((f"`{scenarios[name].name}`", len(outcomes), len(killed),
                     sum(len(o.torn) for o in outcomes),
                     sum(bool(o.temporaries) for o in outcomes),
                     sum(o.finished for o in outcomes), sum(o.equal for o in outcomes)))
        for o in outcomes:
            if o.torn or not o.equal:
                print(f"{name}: {o.point}: torn {o.torn}; {o.difference}", file=sys.stderr)
    totals = ("all", *(sum(r[k] for r in rows) for k in range(1, 7)))
    print("| command | kill points tried | killed before the end | torn files found | "
          "points leaving a temporary (cleared on finishing) | finished | equal to an "
          "uninterrupted run |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in [*rows, totals]:
        print("| " + " | ".join(str(x) for x in row) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))
    return 0 if totals[3] == 0 and totals[6] == totals[1] else 1


if __name__ == "__main__":
    sys.exit(main())
