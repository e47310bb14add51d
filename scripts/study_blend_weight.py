"""The guide's share in `blend`, chosen on VALIDATION subjects (BENCHMARKS.md, "Blending").

    .venv/bin/python scripts/study_blend_weight.py --data /tmp/val --subjects 40-45 \\
        --domains t1,protocol,mprage,highfield --weights 0,0.3,0.5,0.7,1

For each domain: the mean over subjects of the mean Dice (CSF, GM, WM) of the blend
(1 - w) x model + w x guide (class probabilities on the input grid, then `uda predict`'s
label map and brain clean-up), one column per weight w; w 0 is the model alone, w 1 the
guide alone. DATA holds `uda demo-data DATA --subjects ... --domains ...`; never point it at
the benchmark's held-out subjects (100+).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from eval_model_mean import input_grid_probabilities

from uda_core.cli.common import subject_range
from uda_core.engine.device import resolve_device
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.brain_region import extracts_brain, label_map
from uda_core.models.bundle import load_model
from uda_core.scores.segmentation import dice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--subjects", type=subject_range, default=subject_range("40-45"))
    parser.add_argument("--domains", default="t1,protocol,mprage,highfield")
    parser.add_argument("--weights", default="0,0.3,0.5,0.7,1")
    parser.add_argument("--model", default="demo:brain-t1")
    parser.add_argument("--guide", default="demo:brain-t1-robust")
    args = parser.parse_args()
    device = resolve_device("cpu")
    bundles = [load_model(args.model), load_model(args.guide)]
    networks = [b.build_network(device) for b in bundles]
    weights = [float(w) for w in args.weights.split(",")]
    brain = extracts_brain(bundles[0])
    classes = range(1, len(bundles[0].class_names))
    print("| domain | " + " | ".join(f"w {w:g}" for w in weights) + " |")
    print("|---|" + "---|" * len(weights))
    for domain in args.domains.split(","):
        scores: dict[float, list[float]] = {w: [] for w in weights}
        for subject in args.subjects:
            stem = Path(args.data) / domain / f"sub-{subject:03d}"
            volume = read_volume(f"{stem}_{domain}.nii.gz")
            reference = read_labels(f"{stem}_labels.nii.gz").data
            probs = input_grid_probabilities(bundles, networks, volume, device)
            for w in weights:
                labels = label_map((1 - w) * probs[0] + w * probs[1], brain)
                scores[w].append(float(np.mean([dice(labels == c, reference == c, True)
                                                for c in classes])))
        print(f"| {domain} | " + " | ".join(f"{np.mean(scores[w]):.3f}" for w in weights)
              + " |", flush=True)


if __name__ == "__main__":
    main()
