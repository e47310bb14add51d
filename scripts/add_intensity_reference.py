"""Record intensity_reference in the shipped demo models (done once; models trained since
record it themselves, see `uda train-source`).

    .venv/bin/python scripts/add_intensity_reference.py DATA

DATA/t1 holds the whole-head t1 training subjects 0-11 and 20-27 of scripts/make_demo_model.sh
(`uda demo-data DATA --subjects 0-11,20-27 --domains t1`): the reference is the mean of their
normalised intensity percentiles inside the labelled brain, as train-source computes it.
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

SUBJECTS = (*range(12), *range(20, 28))


def main() -> None:
    data = Path(sys.argv[1])
    pairs = [(data / "t1" / f"sub-{s:03d}_t1.nii.gz", data / "t1" / f"sub-{s:03d}_labels.nii.gz")
             for s in SUBJECTS]
    for name in ("demo:brain-t1", "demo:brain-t1-robust"):
        bundle = load_model(name)
        reference = intensity_reference(load_slices_for_bundle(bundle, pairs).volume_quantiles)
        print(name, np.round(reference["values"], 3))
        provenance = dict(bundle.provenance, intensity_reference=(
            "added by scripts/add_intensity_reference.py from whole-head t1 training "
            "subjects 0-11, 20-27 (inside the labelled brain)"))
        save_bundle(dataclasses.replace(bundle, intensity_reference=reference,
                                        provenance=provenance),
                    resolve_model(name), overwrite=True)


if __name__ == "__main__":
    main()
