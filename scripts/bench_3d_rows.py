"""Benchmark rows of a 3D model on a demo shift: source only, and one adaptation timed as a
user runs it (the numbers `uda bench` reports for the 2D model, for a model it cannot take).

    PYTHONPATH=. .venv/bin/python scripts/bench_3d_rows.py --data DIR
        [--model demo:brain-t1-3d] [--shift protocol] [--subjects 100-105]
        [--adapt-subjects 100-102] [--methods adabn,sfda] [--threads 1]
        [--paired-shift t1] [--select-by last]

DIR holds the held-out demo subjects as `uda demo-data DIR --subjects 100-105 --domains
t1,protocol` writes them (DIR/<shift>/sub-XXX_<shift>.nii.gz and _labels.nii.gz, 2 mm). Source
only: every subject of --subjects segmented in this process on its own grid (the path of `uda
predict`). Adaptation, for each of --methods in turn: `uda adapt --model M --method METHOD
--out OUT TARGETS` with the method's default steps and settings on --adapt-subjects, in a
fresh process (files to files; ddm also gets `--paired`: each subject's image of
--paired-shift, DIR/<paired-shift>/sub-XXX_<paired-shift>.nii.gz, on the same grid:
read, adapt, write the model and masks); its masks are scored against the labels. Prints a
Markdown table, a row as soon as it is measured (Dice = mean over the foreground classes per
volume, averaged over the volumes; HD95 likewise, mm) and, for each adaptation, wall time,
the child's CPU time (user + system), its peak resident memory, the 1-minute load average
before and after, and the checkpoint the run kept (run.json's outcome and selected_by).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from uda_core.cli.common import subject_range
from uda_core.engine.device import resolve_device
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model
from uda_core.models.inference import segment_volume
from uda_core.scores.segmentation import segmentation_scores


def _scores(pairs, names) -> tuple[float, float]:
    """(mean Dice, mean HD95 mm) over (prediction, reference) label volumes."""
    rows = [segmentation_scores(pred.data, ref.data, names, ref.spacing) for pred, ref in pairs]
    return (float(np.mean([r["mean_dice"] for r in rows])),
            float(np.mean([r["mean_hd95_mm"] for r in rows])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", default="demo:brain-t1-3d")
    parser.add_argument("--shift", default="protocol")
    parser.add_argument("--subjects", type=subject_range, default=subject_range("100-105"))
    parser.add_argument("--adapt-subjects", type=subject_range,
                        default=subject_range("100-102"))
    parser.add_argument("--methods", default="adabn,sfda",
                        help="comma-separated, each run with its defaults")
    parser.add_argument("--threads", type=int, default=1, help="torch threads everywhere")
    parser.add_argument("--select-by", help="passed to uda adapt (e.g. last: the last step's "
                                            "weights, to see what a method does when the "
                                            "label-free choice keeps step 0)")
    parser.add_argument("--paired-shift", default="t1",
                        help="ddm: the domain of each subject's paired source-modality image")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)   # the adaptation's process
    torch.set_num_threads(args.threads)

    def files(subject: int, shift: str | None = None) -> tuple[Path, Path]:
        shift = shift or args.shift
        stem = args.data / shift / f"sub-{subject:03d}"
        return Path(f"{stem}_{shift}.nii.gz"), Path(f"{stem}_labels.nii.gz")

    bundle = load_model(args.model)
    device = resolve_device("cpu")
    network = bundle.build_network(device)
    names = bundle.class_names
    print(f"\n{args.model} on {args.shift}, torch threads {args.threads}\n")
    print("| run | subjects | steps | Dice | HD95 (mm) | wall s | CPU s | peak MB |")
    print("|---|---|---|---|---|---|---|---|", flush=True)

    def row(name, subjects, steps, pairs, timing=None) -> None:
        dice, hd95 = _scores(pairs, names)
        timed = " | ".join(f"{v:.0f}" for v in timing) if timing else "- | - | -"
        print(f"| {name} | {subjects[0]}-{subjects[-1]} | {steps} | {dice:.3f} | {hd95:.2f} "
              f"| {timed} |", flush=True)

    source = {s: (segment_volume(bundle, network, read_volume(files(s)[0]), device),
                  read_labels(files(s)[1])) for s in args.subjects}
    row("source only", args.subjects, "-", source.values())
    row("source only", args.adapt_subjects, "-", [source[s] for s in args.adapt_subjects])
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "adapted"
            command = [sys.executable, "-m", "uda_core.cli", "adapt", "--model", args.model,
                       "--method", method, "--device", "cpu", "--out", str(out),
                       *[str(files(s)[0]) for s in args.adapt_subjects]]
            if args.select_by:
                command += ["--select-by", args.select_by]
            if method == "ddm":
                command += ["--paired", *[str(files(s, args.paired_shift)[0])
                                          for s in args.adapt_subjects]]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            load_after = os.getloadavg()[0]
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime)
            adapted = [(read_labels(out / "masks" / f"{files(s)[0].name[:-7]}_seg.nii.gz"),
                        read_labels(files(s)[1])) for s in args.adapt_subjects]
            # peak: the largest child so far (ru_maxrss of all waited-for children)
            label = method + (f" (select-by {args.select_by})" if args.select_by else "")
            row(label, args.adapt_subjects, "default", adapted,
                (wall, cpu, usage.ru_maxrss / 1024))
            run = json.loads((out / "run.json").read_text())
            print(f"  {method}: load average (1 min) {load_before:.1f} before, "
                  f"{load_after:.1f} after; {' '.join(command[3:7])} ...; "
                  f"{run['outcome']} (selected by {run['selected_by']})", flush=True)


if __name__ == "__main__":
    main()
