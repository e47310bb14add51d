"""Dice/HD95 of a segmentation model on held-out demo subjects of every domain.

    .venv/bin/python scripts/eval_demo_model.py [--model demo:brain-t1] [--subjects 100-105]

Generates the held-out subjects (never used in training: those are 0-27), segments each
domain's volumes with `uda_core` (the same path as `uda predict`) on the input grid, and prints
a Markdown table: mean over subjects of per-class Dice (CSF, GM, WM), their mean, and mean HD95.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from uda_core.cli.common import subject_range
from uda_core.engine.device import resolve_device
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model
from uda_core.models.inference import segment_volume
from uda_core.scores.segmentation import segmentation_scores
from uda_core.synth.demo_data import write_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo:brain-t1")
    parser.add_argument("--subjects", type=subject_range, default=subject_range("100-105"))
    parser.add_argument("--domains", default="t1,protocol,t2,pd")
    args = parser.parse_args()
    domains = args.domains.split(",")
    bundle = load_model(args.model)
    device = resolve_device("auto")
    network = bundle.build_network(device)
    names = bundle.class_names
    print(f"| domain | {' | '.join(names[1:])} | mean Dice | mean HD95 (mm) | s/volume |")
    print("|---|" + "---|" * (len(names) + 2))
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_data(Path(tmp), subjects=args.subjects, domains=domains, progress=False)
        for domain in domains:
            rows, seconds = [], []
            for subject in args.subjects:
                stem = Path(tmp) / domain / f"sub-{subject:03d}"
                volume = read_volume(f"{stem}_{domain}.nii.gz")
                start = time.perf_counter()
                pred = segment_volume(bundle, network, volume, device)
                seconds.append(time.perf_counter() - start)
                ref = read_labels(f"{stem}_labels.nii.gz")
                rows.append(segmentation_scores(pred.data, ref.data, names, ref.spacing))
            per_class = [np.mean([r["per_class"][n]["dice"] for r in rows]) for n in names[1:]]
            print(f"| {domain} | " + " | ".join(f"{d:.3f}" for d in per_class)
                  + f" | {np.mean([r['mean_dice'] for r in rows]):.3f}"
                  + f" | {np.mean([r['mean_hd95_mm'] for r in rows]):.2f}"
                  + f" | {np.mean(seconds):.2f} |")


if __name__ == "__main__":
    main()
