"""Dice/HD95 of segmentation models on held-out demo subjects of every domain.

    .venv/bin/python scripts/eval_demo_model.py [--models demo:brain-t1,demo:brain-t1-robust]
        [--data resources/demo | --subjects 100-105 [--no-heads]] [--domains t1,protocol]

Segments each domain's volumes with `uda_core` (the same path as `uda predict`) on the input
grid and prints a Markdown table per model: mean over subjects of per-class Dice (CSF, GM,
WM), their mean, the brain-mask Dice (predicted non-background vs the labelled brain), mean
HD95 and seconds per volume; for a whole-head model the last two columns give the mean and
brain-mask Dice of the plain argmax, before the brain-region clean-up that `uda predict`
applies (uda_core.models.brain_region). The subjects are held out (training used 0-27); with
--data the shipped demo folder is read, else the subjects are generated (whole heads unless
--no-heads).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from uda_core.cli.common import subject_range
from uda_core.engine.device import resolve_device
from uda_core.grid.prepare import probabilities_to_input_grid
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.brain_region import extracts_brain, label_map
from uda_core.models.bundle import load_model
from uda_core.models.inference import predict_grid, prepare_for_bundle
from uda_core.scores.segmentation import dice, segmentation_scores
from uda_core.synth.demo_data import write_demo_data


def table(model: str, root: Path, subjects, domains) -> None:
    bundle = load_model(model)
    device = resolve_device("auto")
    network = bundle.build_network(device)
    names = bundle.class_names
    print(f"\n{model} on {root}\n")
    brain = extracts_brain(bundle)
    print(f"| domain | {' | '.join(names[1:])} | mean Dice | brain mask Dice | "
          "mean HD95 (mm) | s/volume |" + (" argmax: mean Dice | argmax: brain mask |"
                                           if brain else ""))
    print("|---|" + "---|" * (len(names) + 3 + 2 * brain))
    for domain in domains:
        rows, seconds, masks, plain, plain_masks = [], [], [], [], []
        for subject in subjects:
            stem = root / domain / f"sub-{subject:03d}"
            volume = read_volume(f"{stem}_{domain}.nii.gz")
            start = time.perf_counter()
            prepared = prepare_for_bundle(bundle, volume, network, device)
            probs = probabilities_to_input_grid(predict_grid(network, prepared, device),
                                                prepared, volume)
            pred = label_map(probs, brain)           # what `uda predict` writes
            seconds.append(time.perf_counter() - start)
            ref = read_labels(f"{stem}_labels.nii.gz")
            rows.append(segmentation_scores(pred, ref.data, names, ref.spacing))
            masks.append(dice(pred > 0, ref.data > 0, True))   # brain mask
            if brain:
                argmax = label_map(probs)
                plain.append(np.mean([dice(argmax == c, ref.data == c, True)
                                      for c in range(1, len(names))]))
                plain_masks.append(dice(argmax > 0, ref.data > 0, True))
        per_class = [np.mean([r["per_class"][n]["dice"] for r in rows]) for n in names[1:]]
        print(f"| {domain} | " + " | ".join(f"{d:.3f}" for d in per_class)
              + f" | {np.mean([r['mean_dice'] for r in rows]):.3f} | {np.mean(masks):.3f}"
              + f" | {np.mean([r['mean_hd95_mm'] for r in rows]):.2f}"
              + f" | {np.mean(seconds):.2f} |"
              + (f" {np.mean(plain):.3f} | {np.mean(plain_masks):.3f} |" if brain else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo:brain-t1")
    parser.add_argument("--data", help="a demo folder (e.g. resources/demo) instead of "
                                       "generating the subjects")
    parser.add_argument("--subjects", type=subject_range, default=subject_range("100-102"))
    parser.add_argument("--domains", default="t1,protocol,t2,pd")
    parser.add_argument("--heads", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    domains = args.domains.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp)
        if not args.data:
            write_demo_data(root, subjects=args.subjects, domains=domains, progress=False,
                            heads=args.heads)
        for model in args.models.split(","):
            table(model, root, args.subjects, domains)


if __name__ == "__main__":
    main()
