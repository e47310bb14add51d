"""How should intensity standardisation match a scan? Variants on VALIDATION subjects (40-42).

    uda demo-data /tmp/val --subjects 40-42 --domains t1,protocol,mprage,highfield
    .venv/bin/python scripts/study_standardise.py /tmp/val protocol mprage highfield

Prints, per shift, the mean Dice (CSF, GM, WM; each volume on its own grid) of demo:brain-t1
on the plain scans and after matching the brain's percentiles (the brain from the network's
first pass) with all landmarks, with subsets of them, and with a second pass (the shipped
default, uda_core.models.inference.STANDARDISE_PASSES = 2). Never run it on the benchmark's
held-out subjects (100+).
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch

from uda_core.io.intensity import match_quantiles, region_quantiles
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model
from uda_core.models.inference import predict_slices, prepare_for_bundle, segment_prepared
from uda_core.scores.segmentation import segmentation_scores

SUBJECTS = (40, 41, 42)


def main(data: str, shifts: list[str]) -> None:
    bundle = load_model("demo:brain-t1")
    network, device = bundle.build_network("cpu"), torch.device("cpu")
    assert bundle.intensity_reference is not None
    reference = np.asarray(bundle.intensity_reference["values"])
    levels = np.asarray(bundle.intensity_reference["percentiles"])
    subsets = {"all landmarks": levels >= 0, "landmarks 5-95": (levels >= 5) & (levels <= 95),
               "landmarks >= 10": levels >= 10}
    for shift in shifts:
        dice: dict[str, list[float]] = {k: [] for k in ["none", *subsets, "two passes"]}
        for s in SUBJECTS:
            volume = read_volume(f"{data}/{shift}/sub-{s:03d}_{shift}.nii.gz")
            labels = read_labels(f"{data}/{shift}/sub-{s:03d}_labels.nii.gz")

            def score(model_input, volume=volume, labels=labels) -> float:
                pred = segment_prepared(network, model_input, volume, device)
                return segmentation_scores(pred.data, labels.data, bundle.class_names,
                                           labels.spacing, surface=False)["mean_dice"]

            plain = prepare_for_bundle(bundle, volume)
            dice["none"].append(score(plain))
            brain = predict_slices(network, plain.slices, device).argmax(0) > 0
            own = region_quantiles(plain.slices, brain)
            for name, keep in subsets.items():
                matched = copy.copy(plain)
                matched.slices = match_quantiles(plain.slices, own[keep], reference[keep])
                dice[name].append(score(matched))
            twice = copy.copy(plain)
            twice.slices = match_quantiles(plain.slices, own, reference)
            brain = predict_slices(network, twice.slices, device).argmax(0) > 0
            twice.slices = match_quantiles(plain.slices, region_quantiles(plain.slices, brain),
                                           reference)
            dice["two passes"].append(score(twice))
        for name, values in dice.items():
            print(f"{shift:10s} {name:16s} {np.round(values, 3)} mean {np.mean(values):.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
