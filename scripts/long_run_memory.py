"""Memory of a 5,000-step engine run (tests/faults/long_run.py): the resident set size every
250 steps, and the growth from step 500 (after warm-up) to the end, for BENCHMARKS.md.

    PYTHONPATH=. .venv/bin/python scripts/long_run_memory.py [--steps 5000] [--plot PNG]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tests.faults.long_run import long_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--plot", help="also draw RSS against step into this PNG")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        memory = long_run(Path(work) / "run", steps=args.steps)
    seconds = time.perf_counter() - started
    steps = sorted(memory)
    print("| step | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    print("| RSS MiB | " + " | ".join(f"{memory[s]:.1f}" for s in steps) + " |")
    warm = memory[min(s for s in steps if s >= 500)]
    print(f"\n{args.steps} steps in {seconds:.0f} s; RSS at step 500 {warm:.1f} MiB, at the end "
          f"{memory[steps[-1]]:.1f} MiB: growth {100 * (memory[steps[-1]] / warm - 1):+.2f} %")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(steps, [memory[s] for s in steps], marker="o")
        ax.set_xlabel("engine step")
        ax.set_ylabel("RSS (MiB)")
        ax.set_ylim(0, max(memory.values()) * 1.1)
        ax.set_title("Memory of a 5,000-step run (tiny network)")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
