"""Cross-subject, cross-contrast check of the default `uda reg apply` (issue 13).

For each pair (fixed: the T1 of demo subject A, moving: the PD-like (or --domain) image of
another subject B, with B's tissue labels), runs `uda reg apply --model MODEL` with its
defaults and prints the warped-label Dice (mean over CSF, GM, WM, against A's labels) before
registration (B's labels as they are: the demo volumes share one grid) and after, with the
notes the command printed. Usage:

    PYTHONPATH=. python scripts/check_cross_subject_reg.py [--domain pd] [--model demo:reg-t1]
        [--pairs 100:101,101:102,102:100] [--extra="--method sitk"] [--data DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np

from uda_core.cli import main
from uda_core.io.readers import read_labels
from uda_core.tasks.registration_data import demo_files


def dice(a: np.ndarray, b: np.ndarray, classes=(1, 2, 3)) -> float:
    return float(np.mean([2 * ((a == c) & (b == c)).sum()
                          / max((a == c).sum() + (b == c).sum(), 1) for c in classes]))


def main_check() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="pd")
    parser.add_argument("--model", default="demo:reg-t1")
    parser.add_argument("--pairs", default="100:101,101:102,102:100")
    parser.add_argument("--extra", default="", help="more `uda reg apply` options (as "
                        "--extra='--refine-3d off': the slice-wise field alone)")
    parser.add_argument("--data", default=None,
                        help="a demo folder (default resources/demo/brains), e.g. the "
                             "validation subjects 40-42 with --pairs 40:41,41:42,42:40")
    args = parser.parse_args()
    for item in args.pairs.split(","):
        a, b = (int(s) for s in item.split(":"))
        t1, _, labels_a = demo_files("t1", (a,), args.data)
        _, other, labels_b = demo_files(args.domain, (b,), args.data)
        fixed_labels = read_labels(labels_a[0]).data
        moving_labels = read_labels(labels_b[0]).data
        with tempfile.TemporaryDirectory() as out:
            extra = shlex.split(args.extra)
            command = ["reg", "apply", *([] if "sitk" in args.extra else ["--model", args.model]),
                       "--fixed", str(t1[0]), "--moving", str(other[0]), "--moving-labels",
                       str(labels_b[0]), "--out", out, "--device", "cpu", *extra]
            err = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(command)
            seconds = time.perf_counter() - start
            if code:
                print(f"{a}<-{b}: failed: {err.getvalue().strip()}")
                continue
            name = f"sub-{b:03d}_{args.domain}_labels_warped.nii.gz"
            warped = read_labels(Path(out) / name).data
        before, after = dice(moving_labels, fixed_labels), dice(warped, fixed_labels)
        notes = " | ".join(line[6:] for line in err.getvalue().splitlines()
                           if line.startswith("note: "))
        print(f"T1 sub-{a:03d} <- {args.domain} sub-{b:03d}: Dice {before:.3f} -> {after:.3f} "
              f"({after - before:+.3f}), {seconds:.0f} s; {notes}", flush=True)


if __name__ == "__main__":
    main_check()
