"""Step 0 against the last step of finished validation runs, on whole volumes: mean Dice
(CSF, GM, WM, `uda predict`'s path) and intensity_fit on the model grid, per run.

    .venv/bin/python scripts/score_last_vs_source.py RUN_DIR[,RUN_DIR...] [N_TARGETS]

Each RUN_DIR is a `uda adapt` output on VALIDATION subjects with a checkpoints/last.pt
(scripts/validation_study.py writes them); step 0 is its run.json's model, prepared as the
run's adapted.pt prepares (so "+std" runs are standardised at both ends). A quick look at
whether a score computed after the fact moves with Dice; never use benchmark runs (100+).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from uda_core.engine.checkpoints import load_checkpoint
from uda_core.engine.device import resolve_device
from uda_core.grid.prepare import probabilities_to_input_grid
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.brain_region import extracts_brain, label_map
from uda_core.models.bundle import load_model
from uda_core.models.inference import predict_grid, prepare_for_bundle
from uda_core.scores.label_free import intensity_fit
from uda_core.scores.segmentation import dice


def evaluate(run: Path, n_targets: int | None, device) -> str:
    record = json.loads((run / "run.json").read_text())
    source = load_model(record["model"])
    prepare_as = load_model(run / "adapted.pt")
    brain = extracts_brain(source)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    networks = {"step 0": source.build_network(device), "last": source.build_network(device)}
    networks["last"].load_state_dict(last["network"], strict=False)
    results = {}
    for name, network in networks.items():
        network.eval()
        dices, fits = [], []
        for target in record["targets"][:n_targets]:
            volume = read_volume(target)
            reference = read_labels(f"{target.rsplit('_', 1)[0]}_labels.nii.gz").data
            prepared = prepare_for_bundle(prepare_as, volume, network, device)
            probs = predict_grid(network, prepared, device)
            labels = torch.from_numpy(probs.argmax(0))
            fits.append(intensity_fit(torch.from_numpy(prepared.slices), labels))
            pred = label_map(probabilities_to_input_grid(probs, prepared, volume), brain)
            dices.append(np.mean([dice(pred == c, reference == c, True) for c in (1, 2, 3)]))
        results[name] = (float(np.mean(dices)), float(np.mean(fits)))
    (d0, f0), (d1, f1) = results["step 0"], results["last"]
    return (f"| {run.parent.name}/{run.name} | {last['step']} | {d0:.3f} -> {d1:.3f} "
            f"({d1 - d0:+.3f}) | {f0:.4f} -> {f1:.4f} ({f1 - f0:+.4f}) |")


def main() -> None:
    torch.set_num_threads(1)
    device = resolve_device("cpu")
    n_targets = int(sys.argv[2]) if len(sys.argv) > 2 else None
    print("| run | last step | Dice step 0 -> last | intensity_fit step 0 -> last |")
    print("|---|---|---|---|")
    for run in sys.argv[1].split(","):
        print(evaluate(Path(run), n_targets, device), flush=True)


if __name__ == "__main__":
    main()
