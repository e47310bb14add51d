"""Try method settings on VALIDATION subjects (40-42), never on the held-out benchmark ones.

    .venv/bin/python scripts/tune_on_validation.py --domain protocol --method sfda \
        --grid '{"lr": [1e-4, 1e-3]}' [--steps 300] [--paired]

Writes the validation subjects to a temp folder (or --work), adapts with each setting and
prints the mean Dice (CSF/GM/WM) of the written masks against their labels, next to the
source-only Dice. This is how the shipped defaults were chosen (see METHODS notes in each
method's config).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np

from uda_core.engine.device import resolve_device
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model
from uda_core.models.inference import segment_volume
from uda_core.runs.adapt import run_adaptation
from uda_core.scores.segmentation import segmentation_scores
from uda_core.synth.demo_data import write_demo_data

SUBJECTS = (40, 41, 42)


def mean_dice(masks, labels, names) -> float:
    return float(np.mean([segmentation_scores(read_labels(m).data, read_labels(ref).data, names,
                                              (2, 2, 2), surface=False)["mean_dice"]
                          for m, ref in zip(masks, labels, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--grid", default="{}", help="JSON: setting -> list of values")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--engine", default="{}", help="JSON engine settings")
    parser.add_argument("--paired", action="store_true", help="give the t1 images as pairs")
    parser.add_argument("--source", action="store_true", help="give labelled t1 subjects 0-5")
    parser.add_argument("--work")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp())
    if not (work / args.domain).exists():
        write_demo_data(work, subjects=SUBJECTS, domains=("t1", args.domain), progress=False)
    if args.source and not (work / "source" / "t1").exists():
        write_demo_data(work / "source", subjects=range(0, 6), domains=("t1",), progress=False)
    targets = [work / args.domain / f"sub-{s:03d}_{args.domain}.nii.gz" for s in SUBJECTS]
    labels = [work / args.domain / f"sub-{s:03d}_labels.nii.gz" for s in SUBJECTS]
    paired = ([work / "t1" / f"sub-{s:03d}_t1.nii.gz" for s in SUBJECTS]
              if args.paired else None)
    bundle = load_model("demo:brain-t1")
    device = resolve_device("auto")
    network = bundle.build_network(device)
    before = []
    for target, label in zip(targets, labels, strict=True):
        pred = segment_volume(bundle, network, read_volume(target), device)
        before.append(segmentation_scores(pred.data, read_labels(label).data,
                                          bundle.class_names, (2, 2, 2),
                                          surface=False)["mean_dice"])
    print(f"{args.domain} source-only mean Dice {np.mean(before):.3f}")
    grid = json.loads(args.grid)
    keys = list(grid)
    engine = json.loads(args.engine)
    if args.steps:
        engine["steps"] = args.steps
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = dict(zip(keys, values, strict=True))
        out = Path(tempfile.mkdtemp(dir=work))
        summary = run_adaptation("demo:brain-t1", args.method, targets, out, paired=paired,
                                 source=[work / "source" / "t1"] if args.source else None,
                                 method_settings=settings, engine_settings=dict(engine))
        dice = mean_dice(summary["masks"], labels, bundle.class_names)
        print(f"{args.method} {settings} engine {engine}: Dice {dice:.3f} "
              f"(chose step {summary['chosen_step']} by {summary['selected_by']}, "
              f"{summary['steps_per_second']:.2f} steps/s, {summary['status']})", flush=True)


if __name__ == "__main__":
    main()
