"""Predicting a cohort: many volumes through one network, reading and writing overlapped with
inference, one summary table per run. 2D networks run slice by slice, 3D ones by sliding
window over the whole model grid (:func:`~uda_core.models.inference.predict_grid`).

Pipeline: with ``workers`` > 0 a pool of that many worker processes (``spawn``) reads each
volume and resamples it onto its model grid (:func:`~uda_core.runs.cohort_workers.load_prepared`)
and later maps the probabilities back and writes the mask
(:func:`~uda_core.runs.cohort_workers.write_mask`); this process only runs the network.
At most ``workers + 1`` volumes are being read and ``workers`` masks being written at any
time (a bounded queue), so memory does not grow with the cohort. ``workers=0`` does all of it
in this process, one volume after another.

A volume that fails (unreadable, no head, a write error) never stops the others: its row in
the summary says why. Rows (``SUMMARY_COLUMNS``): file, mask, status (written, skipped,
failed), seconds of work spent on it (read + predict + write), the class volumes in mL on
the input grid, and label-free quality numbers on the model grid: ``entropy`` (mean
normalised entropy over the head's voxels, 0 = certain, 1 = uniform) and ``prior_kl`` (KL of
the predicted class ratios from the bundle's class-ratio prior, nats, mean over slices
showing head; blank without a prior, and for 3D networks, whose prior is of patches, not
slices); ``flags`` names the numbers that are
outliers within this run (above median + 3 x 1.4826 x MAD of the written rows, with at least
OUTLIER_MIN_ROWS rows): a cue to look at that mask, not a verdict.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uda_core.errors import UdaError
from uda_core.grid.prepare import ModelInput
from uda_core.io.atomic import atomic_output
from uda_core.io.intensity import foreground_mask
from uda_core.models.brain_region import extracts_brain
from uda_core.models.bundle import ModelBundle
from uda_core.models.inference import check_single_channel, predict_grid, standardise_prepared
from uda_core.models.prior import prior_for_positions
from uda_core.runs.cohort_workers import GridSpec, Loaded, load_prepared, write_mask
from uda_core.scores.label_free import prior_divergence

OUTLIER_MIN_ROWS = 5
QUALITY_NUMBERS = ("entropy", "prior_kl")


@dataclass
class CohortItem:
    """One input and the mask it gets."""

    source: Path
    target: Path
    skip: bool = False      # its mask exists and --skip-existing was given


def summary_columns(class_names: Sequence[str]) -> list[str]:
    return ["file", "mask", "status", "seconds",
            *(f"{name}_ml" for name in class_names), *QUALITY_NUMBERS, "flags", "reason"]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if isinstance(exc, UdaError) else f"{type(exc).__name__}: {text}"


def quality_numbers(probs: np.ndarray, model_input: ModelInput,
                    prior: dict | None) -> dict[str, float]:
    """entropy and prior_kl (see the module doc) of probabilities (C, Z, X, Y) on the model
    grid of `model_input`; the head is judged from intensities (foreground_mask), not from
    the prediction, so a network that finds nothing still gets numbers."""
    head = foreground_mask(model_input.slices)
    if not head.any():
        head = np.ones_like(head)
    entropy = -(probs * np.log(np.clip(probs, 1e-10, None))).sum(axis=0) / math.log(len(probs))
    numbers = {"entropy": float(entropy[head].mean()), "prior_kl": float("nan")}
    showing = np.flatnonzero(head.reshape(head.shape[0], -1).mean(axis=1) > 0.005)
    if prior and showing.size:
        batch = torch.from_numpy(np.ascontiguousarray(np.moveaxis(probs[:, showing], 1, 0)))
        tau = prior_for_positions(prior, model_input.positions[showing]).astype(np.float32)
        numbers["prior_kl"] = prior_divergence(batch, torch.from_numpy(tau))
    return numbers


def flag_outliers(rows: list[dict[str, Any]]) -> None:
    """Set each written row's "flags" to the quality numbers that are outliers in `rows`."""
    written = [r for r in rows if r["status"] == "written"]
    for name in QUALITY_NUMBERS:
        values = np.array([r.get(name, float("nan")) for r in written], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size < OUTLIER_MIN_ROWS:
            continue
        median = float(np.median(finite))
        spread = 1.4826 * float(np.median(np.abs(finite - median)))
        limit = median + 3 * max(spread, 1e-6)
        for row, value in zip(written, values, strict=True):
            if np.isfinite(value) and value > limit:
                row["flags"] = " ".join(filter(None, [row.get("flags", ""), f"high_{name}"]))


def write_summary(path: Path, rows: list[dict[str, Any]], class_names: Sequence[str]) -> Path:
    """The summary CSV (columns: summary_columns), written atomically."""
    columns = summary_columns(class_names)
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) and math.isfinite(v)
                             else "" if isinstance(v, float) else v)
                         for k, v in row.items()})
    with atomic_output(path, overwrite=True) as temporary:
        temporary.write_text(text.getvalue(), encoding="utf-8")
    return path


class _InProcess:
    """The pool's interface (submit -> future) for workers=0: runs the call at once."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # the caller reads it from the future, as from a worker
            future.set_exception(exc)
        return future

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _pool(workers: int) -> Any:
    if workers <= 0:
        return _InProcess()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def predict_cohort(bundle: ModelBundle, network: torch.nn.Module, device: torch.device,
                   items: Sequence[CohortItem], *, workers: int = 0, batch_size: int = 16,
                   overwrite: bool = False, strict: bool = False, mirror: bool = True,
                   on_row: Callable[[dict[str, Any]], None] | None = None,
                   on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Segment every item (see the module doc); returns the summary rows in input order.

    batch_size: slices (2D network) or sliding windows (3D) per network call; mirror: 3D
    test-time mirroring when the bundle asks for it. strict: a failure raises at once (the
    single-file behaviour) instead of becoming a row. on_row(row) is called as each item
    finishes (in input order); on_batch(n) after each batch of n slices or windows
    (progress). ModelError at once for a network taking several input channels."""
    check_single_channel(bundle)
    spec = GridSpec(tuple(bundle.spacing_mm), tuple(bundle.in_plane_shape),  # type: ignore[arg-type]
                    bundle.normalisation, dims=bundle.dims, brain=extracts_brain(bundle))
    window = bundle.window if bundle.dims == 3 else None
    names = list(bundle.class_names)
    prior = (bundle.class_ratio_prior or None) if window is None else None
    inputs = tuple(i.source for i in items)
    rows: list[dict[str, Any]] = []

    def finish(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    def failed(item: CohortItem, exc: BaseException, seconds: float) -> None:
        if strict:
            raise exc
        finish({"file": str(item.source), "mask": "", "status": "failed",
                "seconds": seconds, "reason": _short(exc)})

    todo: Iterator[CohortItem] = iter(items)
    with _pool(workers) as pool:
        reading: deque[tuple[CohortItem, Future[Loaded] | None]] = deque()
        writing: deque[tuple[CohortItem, Future[Any], dict[str, Any]]] = deque()

        def read_next() -> None:
            item = next(todo, None)
            if item is not None:
                reading.append((item, None if item.skip else
                                pool.submit(load_prepared, item.source, spec)))

        def collect_write() -> None:
            item, future, row = writing.popleft()
            try:
                counts, seconds = future.result()
            except Exception as exc:
                failed(item, exc, row["seconds"])
                return
            row["seconds"] += seconds
            voxel_ml = row.pop("_voxel_ml")
            row.update({f"{n}_ml": float(c) * voxel_ml
                        for n, c in zip(names, counts, strict=True)})
            finish(row)

        for _ in range(max(workers, 0) + 1):
            read_next()
        while reading:
            item, pending = reading.popleft()
            read_next()
            if pending is None:
                while writing:   # keep rows in input order
                    collect_write()
                finish({"file": str(item.source), "mask": str(item.target),
                        "status": "skipped", "seconds": 0.0,
                        "reason": "mask exists (--skip-existing)"})
                continue
            start = time.perf_counter()
            try:
                loaded = pending.result()
                model_input = standardise_prepared(bundle, loaded.model_input, network, device)
                probs = predict_grid(network, model_input, device, window, batch_size,
                                     on_batch, mirror)
                quality = quality_numbers(probs, model_input, prior)
            except Exception as exc:
                while writing:   # keep rows in input order
                    collect_write()
                failed(item, exc, time.perf_counter() - start)
                continue
            row = {"file": str(item.source), "mask": str(item.target), "status": "written",
                   "seconds": loaded.seconds + time.perf_counter() - start, **quality,
                   "voxels": "x".join(map(str, loaded.shape)),
                   "_voxel_ml": float(abs(np.linalg.det(loaded.affine[:3, :3]))) / 1000.0}
            writing.append((item, pool.submit(write_mask, loaded, probs, item.target,
                                              overwrite, inputs, spec.brain), row))
            del loaded, probs, model_input
            while len(writing) > max(workers, 0):
                collect_write()
        while writing:
            collect_write()
    flag_outliers(rows)
    return rows
