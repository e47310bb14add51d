"""Mean Dice (CSF, GM, WM) of two segmentation models and of their averaged softmax, with the
tissue shares of the brain they predict (the labels' beside them), on demo-data volumes.

    PYTHONPATH=. .venv/bin/python scripts/eval_model_mean.py --models demo:brain-t1 \\
        demo:brain-t1-robust --data /tmp/val --subjects 40-45 --domains protocol,mprage,highfield

Each volume goes through `uda predict`'s path (prepare, predict, back to the input grid,
brain-region clean-up). Shares: voxels of each class / voxels labelled brain in the reference
(so their sum is the predicted brain volume relative to the labelled one). Use validation
subjects only for choices (never 100+).
"""

from __future__ import annotations

import argparse

import numpy as np

from uda_core.cli.common import subject_range
from uda_core.engine.device import resolve_device
from uda_core.grid.prepare import probabilities_to_input_grid
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.brain_region import extracts_brain, label_map
from uda_core.models.bundle import load_model
from uda_core.models.inference import predict_grid, prepare_for_bundle
from uda_core.scores.segmentation import dice


def input_grid_probabilities(bundles, networks, volume, device) -> list[np.ndarray]:
    """Each model's class probabilities (C, *volume.shape) on `volume`'s own grid, through
    `uda predict`'s path (prepare, predict on the model grid, back to the input grid)."""
    probs = []
    for bundle, network in zip(bundles, networks, strict=True):
        prepared = prepare_for_bundle(bundle, volume, network, device)
        probs.append(probabilities_to_input_grid(predict_grid(network, prepared, device),
                                                 prepared, volume))
    return probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs=2, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--subjects", default="40-45")
    parser.add_argument("--domains", default="protocol,mprage,highfield")
    args = parser.parse_args()
    device = resolve_device("cpu")
    bundles = [load_model(m) for m in args.models]
    networks = [b.build_network(device) for b in bundles]
    brain = extracts_brain(bundles[0])
    names = [*args.models, "mean"]
    print("| domain | " + " | ".join(f"{n}: Dice | {n}: CSF/GM/WM/brain" for n in names)
          + " | labels: CSF/GM/WM |")
    print("|---|" + "---|---|" * len(names) + "---|")
    for domain in args.domains.split(","):
        dices = {n: [] for n in names}
        shares = {n: [] for n in [*names, "labels"]}
        for subject in subject_range(args.subjects):
            stem = f"{args.data}/{domain}/sub-{subject:03d}"
            volume = read_volume(f"{stem}_{domain}.nii.gz")
            ref = read_labels(f"{stem}_labels.nii.gz").data
            probs = input_grid_probabilities(bundles, networks, volume, device)
            brain_voxels = (ref > 0).sum()
            shares["labels"].append(np.bincount(ref.ravel(), minlength=4)[1:] / brain_voxels)
            for name, p in zip(names, [*probs, (probs[0] + probs[1]) / 2], strict=True):
                pred = label_map(p, brain)
                dices[name].append(np.mean([dice(pred == c, ref == c, True) for c in (1, 2, 3)]))
                shares[name].append(np.bincount(pred.ravel(), minlength=4)[1:] / brain_voxels)

        def fmt(v):
            m = np.mean(v, axis=0)
            return "/".join(f"{x:.3f}" for x in m) + f"/{m.sum():.3f}"
        print(f"| {domain} | " + " | ".join(f"{np.mean(dices[n]):.3f} | {fmt(shares[n])}"
                                           for n in names)
              + f" | {'/'.join(f'{x:.3f}' for x in np.mean(shares['labels'], axis=0))} |",
              flush=True)


if __name__ == "__main__":
    main()
