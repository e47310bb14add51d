"""Record a source statistic in the shipped demo models from their whole-head t1 training
subjects, as `uda train-source` computes it (done once each time the way it is computed
changes; models trained since record it themselves).

    .venv/bin/python scripts/add_source_statistics.py intensity_reference DATA
    .venv/bin/python scripts/add_source_statistics.py class_ratio_prior DATA

intensity_reference (2026-12-02): the mean of the normalised intensity percentiles inside the
labelled brain of subjects 0-11 and 20-27 (`uda demo-data DATA --subjects 0-11,20-27
--domains t1`). class_ratio_prior (2026-12-04): the per-position class shares of the model-grid
slices of subjects 0-11 and 20-39, V5's training heads (`--subjects 0-11,20-39`), without its
skull-stripped brains (uda_core.runs.train_segmentation.class_ratio_prior). The network's
weights are not touched.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from uda_core.grid.labelled_slices import load_slices_for_bundle
from uda_core.models.bundle import load_model, save_bundle
from uda_core.models.bundle.builtins import resolve_model
from uda_core.models.standardise import intensity_reference
from uda_core.runs.train_segmentation import class_ratio_prior

#: statistic -> (training subjects it is computed from, how the provenance names them)
SUBJECTS = {"intensity_reference": ((*range(12), *range(20, 28)),
                                    "subjects 0-11, 20-27 (inside the labelled brain)"),
            "class_ratio_prior": ((*range(12), *range(20, 40)), "subjects 0-11, 20-39")}


def main() -> None:
    statistic, data = sys.argv[1], Path(sys.argv[2])
    subjects, named = SUBJECTS[statistic]
    pairs = [(data / "t1" / f"sub-{s:03d}_t1.nii.gz", data / "t1" / f"sub-{s:03d}_labels.nii.gz")
             for s in subjects]
    for name in ("demo:brain-t1", "demo:brain-t1-robust"):
        bundle = load_model(name)
        slices = load_slices_for_bundle(bundle, pairs)
        if statistic == "intensity_reference":
            value = intensity_reference(slices.volume_quantiles)
            print(name, np.round(value["values"], 3))
        else:
            value = class_ratio_prior(slices, len(bundle.class_names),
                                      len(bundle.class_ratio_prior["per_position"]),
                                      bundle.skull_stripped_input)
            print(name, np.round(np.asarray(value["per_position"])[:, 0], 3))
        provenance = dict(bundle.provenance, **{statistic: (
            f"added by scripts/add_source_statistics.py from whole-head t1 training {named}")})
        save_bundle(dataclasses.replace(bundle, **{statistic: value}, provenance=provenance),
                    resolve_model(name), overwrite=True)


if __name__ == "__main__":
    main()
