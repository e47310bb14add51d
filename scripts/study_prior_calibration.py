"""Does calibrating a model's probabilities to the bundle's class-ratio prior raise Dice?
A study on VALIDATION subjects (BENCHMARKS.md, "The class-ratio prior of heads and brains").

    PYTHONPATH=. .venv/bin/python scripts/study_prior_calibration.py \\
        --models demo:brain-t1,demo:brain-t1-robust --data /tmp/val --subjects 40-45 \\
        --domains protocol,mprage,highfield,t1 [--region tissue]

Per volume, class weights w are found by EM (a label-shift correction, Saerens et al. 2002)
so that the mean of normalise(w x p) over the model-grid slices equals the prior's mean over
their positions (`--region tissue`: only the tissue classes' mix, background left alone).
Prints per domain and model the mean Dice (CSF, GM, WM; `uda predict`'s path) and the brain
shares before ("raw") and after ("cal"), and each class's predicted / prior share. No training.
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
from uda_core.models.prior import prior_for_positions
from uda_core.scores.segmentation import dice


def calibrated(probs: np.ndarray, target: np.ndarray, tissue_only: bool,
               iterations: int = 20) -> np.ndarray:
    """probs (C, Z, X, Y) reweighted per class so their mean shares equal target (C,)."""
    weights = np.ones(probs.shape[0])
    for _ in range(iterations):
        q = probs * weights[:, None, None, None]
        share = (q / q.sum(0, keepdims=True)).reshape(len(weights), -1).mean(1)
        if tissue_only:
            weights[1:] *= target[1:] / target[1:].sum() * share[1:].sum() / share[1:]
        else:
            weights *= target / share
    q = probs * weights[:, None, None, None]
    return q / q.sum(0, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo:brain-t1-robust")
    parser.add_argument("--data", required=True)
    parser.add_argument("--subjects", default="40-45")
    parser.add_argument("--domains", default="protocol,mprage,highfield,t1")
    parser.add_argument("--region", choices=("all", "tissue"), default="all")
    args = parser.parse_args()
    subjects = subject_range(args.subjects)
    if max(subjects) >= 100:
        parser.error("subjects 100 and above are the benchmark's: never tune on them")
    device = resolve_device("cpu")
    bundles = {m: load_model(m) for m in args.models.split(",")}
    networks = {m: b.build_network(device) for m, b in bundles.items()}
    for domain in args.domains.split(","):
        rows: dict[tuple[str, str], list] = {}
        for subject in subjects:
            stem = f"{args.data}/{domain}/sub-{subject:03d}"
            volume = read_volume(f"{stem}_{domain}.nii.gz")
            ref = read_labels(f"{stem}_labels.nii.gz").data
            for name, bundle in bundles.items():
                prepared = prepare_for_bundle(bundle, volume, networks[name], device)
                probs = predict_grid(networks[name], prepared, device)
                prior = prior_for_positions(bundle.class_ratio_prior, prepared.positions).mean(0)
                rows.setdefault((name, "predicted / prior"), []).append(
                    probs.reshape(len(prior), -1).mean(1) / prior)
                for tag, p in (("raw", probs),
                               ("cal", calibrated(probs, prior, args.region == "tissue"))):
                    pred = label_map(probabilities_to_input_grid(p, prepared, volume),
                                     extracts_brain(bundle))
                    brain = (ref > 0).sum()
                    rows.setdefault((name, tag), []).append(
                        [np.mean([dice(pred == c, ref == c, True) for c in (1, 2, 3)]),
                         *[(pred == c).sum() / brain for c in (1, 2, 3)]])
        print(f"{domain}: Dice, CSF/GM/WM of the labelled brain (or predicted / prior share)")
        for (name, tag), values in rows.items():
            print(f"  {name} {tag}: {np.round(np.mean(values, axis=0), 3)}")


if __name__ == "__main__":
    main()
