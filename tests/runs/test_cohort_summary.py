"""The cohort summary's label-free numbers and outlier flags."""

from __future__ import annotations

import numpy as np

from uda_core.grid.prepare import ModelInput
from uda_core.runs.predict_cohort import flag_outliers, quality_numbers


def _input(z=6) -> ModelInput:
    slices = np.full((z, 8, 8), -1.0, np.float32)
    slices[:, 2:6, 2:6] = 1.0    # the head: a bright square in every slice
    return ModelInput(slices, np.eye(4), (8, 8, z), np.linspace(0, 1, z).astype(np.float32))


def test_entropy_is_zero_when_certain_and_one_when_uniform_and_prior_kl_zero_at_the_prior():
    model_input = _input()
    certain = np.zeros((4, 6, 8, 8), np.float32)
    certain[2] = 1.0
    uniform = np.full((4, 6, 8, 8), 0.25, np.float32)
    assert quality_numbers(certain, model_input, None)["entropy"] < 1e-6
    numbers = quality_numbers(uniform, model_input, {"constant": [0.25] * 4})
    assert abs(numbers["entropy"] - 1.0) < 1e-6 and abs(numbers["prior_kl"]) < 1e-6
    assert quality_numbers(certain, model_input, {"constant": [0.25] * 4})["prior_kl"] > 0.1
    assert np.isnan(quality_numbers(certain, model_input, None)["prior_kl"])


def test_only_clear_outliers_among_written_rows_are_flagged():
    rows = [{"status": "written", "entropy": 0.10 + 0.01 * i, "prior_kl": 0.02}
            for i in range(6)]
    rows += [{"status": "written", "entropy": 0.60, "prior_kl": 0.02},
             {"status": "failed", "reason": "unreadable"}]
    flag_outliers(rows)
    assert [r.get("flags", "") for r in rows] == [""] * 6 + ["high_entropy", ""]
    few = [{"status": "written", "entropy": e, "prior_kl": 0.0} for e in (0.1, 0.1, 0.9)]
    flag_outliers(few)    # too few rows to call anything an outlier
    assert all("flags" not in r for r in few)
