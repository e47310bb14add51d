"""Held-out registration rows for several models, SimpleITK once, in one run (issue 13).

Usage: PYTHONPATH=. python scripts/reg_heldout_table.py SHIFT NAME=MODEL [NAME=MODEL ...]
       [--refine-iterations N]

SHIFT t2|pd. The reduced protocol of BENCHMARKS.md "Registration (issue 13, session 5)":
demo subjects 100-102, seed 1234, T1->T2 every 2nd head slice (108 pairs), T1->PD every 4th
(54 pairs). For each model (a registration bundle or built-in name): the network alone
("none") and + the default MIND instance optimisation ("io"; with --refine-iterations N, N
steps at the rate of `uda reg apply --refine-iterations N`); SimpleITK with the first model.
Prints one line per row (accuracy, EPE mm, warped Dice, folding %) and the load average.
"""

from __future__ import annotations

import os
import sys
import time

from uda_core.bench.registration import RegBenchConfig, run_reg_benchmark
from uda_core.models.instance_optimisation import InstanceOptimisation


def main() -> None:
    args = sys.argv[1:]
    refine: dict = {}
    if "--refine-iterations" in args:
        at = args.index("--refine-iterations")
        fewer = InstanceOptimisation().with_iterations(int(args[at + 1]))
        refine = {"iterations": fewer.iterations, "lr": fewer.lr}
        del args[at:at + 2]
    shift, entries = args[0], args[1:]
    extra = {"slice_every": 4, "timing_pairs": 5} if shift == "pd" else {}
    for i, entry in enumerate(entries):
        name, model = entry.split("=", 1)
        load, start = os.getloadavg()[0], time.time()
        methods = ("none", "io", "sitk") if i == 0 else ("none", "io")
        config = RegBenchConfig(shifts=(shift,), methods=methods, model=model, workers=1,
                                refine=refine, **extra)
        result = run_reg_benchmark(config, log=lambda line: None).to_dict()
        for row in result["rows"][shift]:
            s = row["scores"][0]
            label = "SimpleITK" if row["method"] == "SimpleITK" else f"{name} {row['method']}"
            print(f"{shift} {label}: acc {s['accuracy']:.3f} epe {s['epe_mm']:.2f} dice "
                  f"{s['dice_after']:.3f} fold {100 * s['folding']:.2f} "
                  f"(before {s['accuracy_identity']:.3f} / {s['epe_identity_mm']:.2f} / "
                  f"{s['dice_before']:.3f}, {s['pairs']:.0f} pairs)", flush=True)
        print(f"  [{name}: load {load:.1f} -> {os.getloadavg()[0]:.1f}, "
              f"{time.time() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
