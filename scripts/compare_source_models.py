"""Plain vs robust source model, each with and without adaptation, on the demo shifts.

    .venv/bin/python scripts/compare_source_models.py [--models demo:brain-t1,demo:brain-t1-robust]
        [--shifts protocol,t2,pd] [--methods adabn,tent,ddm] [--data resources/demo]

For each model and shift: the source-only mean Dice (CSF, GM, WM) of the held-out demo subjects
100-102 (whole heads, each volume's own grid), then each method with its default settings and
label-free checkpoint choice (ddm gets each subject's t1 scan as its pair), and which one is
best. Adapts on those subjects and scores them (the benchmark's protocol); tunes nothing.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from uda_core.engine.device import resolve_device
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model
from uda_core.models.inference import segment_volume
from uda_core.runs.adapt import run_adaptation
from uda_core.scores.segmentation import segmentation_scores

SUBJECTS = ("sub-100", "sub-101", "sub-102")


def mean_dice(model: str, images: list[Path], labels: list[Path]) -> float:
    bundle = load_model(model)
    device = resolve_device("cpu")
    network = bundle.build_network(device)
    scores = []
    for image, label in zip(images, labels, strict=True):
        pred = segment_volume(bundle, network, read_volume(image), device)
        ref = read_labels(label)
        scores.append(segmentation_scores(pred.data, ref.data, bundle.class_names,
                                          ref.spacing, surface=False)["mean_dice"])
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo:brain-t1,demo:brain-t1-robust")
    parser.add_argument("--shifts", default="protocol,t2,pd")
    parser.add_argument("--methods", default="adabn,tent,ddm")
    parser.add_argument("--data", default="resources/demo")
    args = parser.parse_args()
    root = Path(args.data)
    methods = args.methods.split(",")
    print("| model | shift | source-only | " + " | ".join(methods) + " | best |")
    print("|---|---|---|" + "---|" * (len(methods) + 1))
    for model in args.models.split(","):
        for shift in args.shifts.split(","):
            images = [root / shift / f"{s}_{shift}.nii.gz" for s in SUBJECTS]
            labels = [root / shift / f"{s}_labels.nii.gz" for s in SUBJECTS]
            paired = [root / "t1" / f"{s}_t1.nii.gz" for s in SUBJECTS]
            before = mean_dice(model, images, labels)
            cells, best = [], ("source-only", before)
            for method in methods:
                with tempfile.TemporaryDirectory() as out:
                    start = time.perf_counter()
                    summary = run_adaptation(
                        model, method, images, out, device="cpu", save_masks=False,
                        paired=paired if method == "ddm" else None)
                    after = mean_dice(summary["adapted_model"], images, labels)
                    seconds = time.perf_counter() - start
                cells.append(f"{after:.3f} (step {summary['chosen_step']}, {seconds:.0f} s)")
                if after > best[1]:
                    best = (method, after)
            print(f"| {model} | {shift} | {before:.3f} | " + " | ".join(cells)
                  + f" | {best[0]} ({best[1] - before:+.3f}) |", flush=True)


if __name__ == "__main__":
    main()
