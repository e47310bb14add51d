"""The class-ratio prior of a model bundle: expected share of each class in an axial slice."""

from __future__ import annotations

import numpy as np


def prior_for_positions(prior: dict, positions: np.ndarray) -> np.ndarray:
    """Per-slice prior (B, C) for normalised slice positions (B,) in 0..1.

    Uses the per-position table when the bundle has one (linear interpolation between bin
    centres), else the constant. Rows are renormalised to sum to 1.
    """
    positions = np.asarray(positions, dtype=np.float64)
    table = prior.get("per_position")
    if table:
        table = np.asarray(table, dtype=np.float64)
        centres = np.asarray(prior["positions"], dtype=np.float64)
        rows = np.stack([np.interp(positions, centres, table[:, c])
                         for c in range(table.shape[1])], axis=1)
    else:
        rows = np.tile(np.asarray(prior["constant"], np.float64), (len(positions), 1))
    return rows / np.clip(rows.sum(axis=1, keepdims=True), 1e-12, None)
