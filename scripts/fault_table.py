"""The fault-injection table for BENCHMARKS.md: kill points tried / torn files found / resumes
that finished (and equal an uninterrupted run), per command.

    PYTHONPATH=. .venv/bin/python scripts/fault_table.py [WORK_DIR] [--json FILE] [--only predict]
    PYTHONPATH=. .venv/bin/python scripts/fault_table.py --no-kills --fuzz 1000

With --fuzz N it also prints the header-fuzzing table (tests/faults/header_fuzz.py: N seeded
header mutations given to `uda predict`): cases / clean error lines / masks on the input grid /
tracebacks / bad masks / hangs over 10 s / interpreter crashes.

Runs tests/faults/harness.py's campaign (the kill points of the slow test
tests/faults/test_kill.py::test_many_kill_points): SIGKILL at every n-th write moment of
`uda adapt`, `uda reg adapt` and `uda predict` on tiny data, plus a few at random times.
A killed adapt run is finished with --resume (or run again when it left no checkpoint), a
killed predict run with --skip-existing ("masks kept": those the killed run had completed).
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
    parser.add_argument("--fuzz", type=int, default=0, metavar="N",
                        help="also fuzz N headers (default 0)")
    parser.add_argument("--no-kills", action="store_true", help="skip the kill campaign")
    parser.add_argument("--only", action="append", choices=[c[0] for c in harness.CAMPAIGN],
                        help="kill only this command's runs (repeatable; default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)   # as the children (OMP_NUM_THREADS=1): the same arithmetic
    work = Path(args.work or tempfile.mkdtemp(prefix="uda-faults-"))
    status = 0 if args.no_kills else kill_table(work, args.json, args.only)
    if args.fuzz:
        status = max(status, fuzz_table(work, args.fuzz))
    return status


def fuzz_table(work: Path, count: int) -> int:
    from collections import Counter

    from tests.conftest import make_seg_bundle
    from tests.faults.header_fuzz import run_fuzz
    from uda_core.models.bundle import save_bundle
    work.mkdir(parents=True, exist_ok=True)
    model = str(save_bundle(make_seg_bundle(), work / "fuzz-model.pt", overwrite=True))
    results = run_fuzz(work / "fuzz", model, count)
    verdicts = Counter(r["verdict"] for r in results)
    for r in results:
        if r["verdict"] not in ("error", "mask"):
            print(f"case {r['case']} ({r['what']}): {r['verdict']}: {r['detail']}",
                  file=sys.stderr)
    names = ("error", "mask", "traceback", "bad mask", "hang", "crash")
    print("\n| fuzz cases | clean error line | mask on the input grid | tracebacks | "
          "masks off the grid | hangs > 10 s | interpreter crashes |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(results)} | " + " | ".join(str(verdicts[n]) for n in names) + " |")
    return 0 if verdicts["error"] + verdicts["mask"] == len(results) else 1


def kill_table(work: Path, json_path: str | None, only: list[str] | None = None) -> int:
    scenarios = harness.make_scenarios(work / "data")
    rows, everything = [], {}
    for name, every, timed in harness.CAMPAIGN:
        if only and name not in only:
            continue
        outcomes = harness.campaign(scenarios[name], work, every, timed)
        everything[name] = [dataclasses.asdict(o) for o in outcomes]
        killed = [o for o in outcomes if o.killed]
        rows.append((f"`{scenarios[name].name}`", len(outcomes), len(killed),
                     sum(len(o.torn) for o in outcomes),
                     sum(bool(o.temporaries) for o in outcomes),
                     sum(o.finished for o in outcomes), sum(o.equal for o in outcomes),
                     sum(o.kept for o in outcomes) if scenarios[name].kind == "predict"
                     else "-"))
        for o in outcomes:
            if o.torn or not o.equal:
                print(f"{name}: {o.point}: torn {o.torn}; {o.difference}", file=sys.stderr)
    totals = ("all", *(sum(r[k] for r in rows) for k in range(1, 7)),
              sum(r[7] for r in rows if r[7] != "-"))
    print("| command | kill points tried | killed before the end | torn files found | "
          "points leaving a temporary (cleared on finishing) | finished | equal to an "
          "uninterrupted run | masks kept by --skip-existing |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in [*rows, totals]:
        print("| " + " | ".join(str(x) for x in row) + " |")
    if json_path:
        Path(json_path).write_text(json.dumps(everything, indent=1))
    return 0 if totals[3] == 0 and totals[6] == totals[1] else 1


if __name__ == "__main__":
    sys.exit(main())
