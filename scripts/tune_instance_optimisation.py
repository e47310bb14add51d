"""Choose the test-time instance optimisation on validation subjects 40-42 only (issue 13).

Usage: PYTHONPATH=. python scripts/tune_instance_optimisation.py SHIFT CHECKPOINT [GRID] [DATA]

SHIFT t2|pd; CHECKPOINT a registration bundle (e.g. `uda reg adapt`'s OUT/adapted.pt), an
engine checkpoint (checkpoints/best.pt) of a pemd run of demo:reg-t1 adapted on subjects 40-42
(`uda reg bench --subjects 40-42 --methods pemd --work-dir W`), or "none" for demo:reg-t1 as
shipped; GRID "iterations,lr,smooth[,similarity[,sample_every]];..." (similarity
mind or features, default mind; default grid 2 x 3) or the word "sitk" for SimpleITK on the same
pairs; DATA the demo folder of subjects 40-42 (default /tmp/regval/work/demo, i.e. W/demo).
Scores every third bench pair of 40-42 (the bench's pairs: every 2nd head slice, seed 1234).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from uda_core.bench.registration import SitkRegistration
from uda_core.models.bundle.registration import load_registration_model
from uda_core.models.instance_optimisation import InstanceOptimisation, RefinedRegNet
from uda_core.scores.registration import evaluate_registration
from uda_core.tasks.registration_data import demo_files, pairs_from_slices, slices_from_files


def show(name: str, r: dict) -> None:
    print(f"{name}: acc {r['accuracy']:.3f} epe {r['epe_mm']:.2f} dice {r['dice_after']:.3f} "
          f"fold {100 * r['folding']:.2f}", flush=True)


def main() -> None:
    torch.set_num_threads(1)
    shift, checkpoint = sys.argv[1], sys.argv[2]
    grid = (sys.argv[3].split(";") if len(sys.argv) > 3 else
            [f"20,{lr},{w}" for lr in (0.1, 0.3) for w in (0.01, 0.1, 1.0)])
    data = sys.argv[4] if len(sys.argv) > 4 else "/tmp/regval/work/demo"
    state = None if checkpoint == "none" else torch.load(checkpoint, weights_only=True)
    if isinstance(state, dict) and "network" in state:        # an engine checkpoint
        bundle, net = load_registration_model("demo:reg-t1")
        net.load_state_dict(state["network"])
    else:
        bundle, net = load_registration_model("demo:reg-t1" if state is None else checkpoint)
    net.eval()
    slices = slices_from_files(*demo_files(shift, (40, 41, 42), data), grid=bundle)
    pairs = pairs_from_slices(slices, np.arange(0, len(slices), 2),
                              np.random.default_rng(1234), displacement_grid=net.grid,
                              stride=net.stride).subset(slice(0, None, 3))
    r = evaluate_registration(net, pairs, spacing_mm=(2, 2))
    show(f"{shift} {len(pairs)} pairs network", r)
    print(f"before: acc {r['accuracy_identity']:.3f} epe {r['epe_identity_mm']:.2f} "
          f"dice {r['dice_before']:.3f}", flush=True)
    for entry in grid:
        start = time.time()
        if entry == "sitk":
            runner = SitkRegistration(net.grid, net.stride, (2, 2), 100)
        else:
            iterations, lr, weight, *rest = entry.split(",")
            extra = dict(zip(("similarity", "sample_every"), rest, strict=False))
            if "sample_every" in extra:
                extra["sample_every"] = int(extra["sample_every"])
            runner = RefinedRegNet(net, InstanceOptimisation(int(iterations), float(lr),
                                                             float(weight), **extra))
        r = evaluate_registration(runner, pairs, spacing_mm=(2, 2))
        show(f"{entry} ({time.time() - start:.0f}s)", r)


if __name__ == "__main__":
    main()
