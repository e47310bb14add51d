"""One adaptation run from files to files: the work behind `uda adapt` (and the GUI's Start).

Checks that the method has what it needs before anything runs, prepares the data, runs the
engine, and writes OUT/adapted.pt (a model bundle whose provenance names its parent, method,
config and data), OUT/metrics.jsonl (one line per logged step), OUT/run.json (settings, data,
outcome), OUT/report.png and OUT/report.md (curves and a summary) and, unless turned off,
OUT/masks/<stem>_seg.nii.gz on each target's own grid.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from uda_core import __version__
from uda_core.engine import Engine, EngineConfig, RunControl, RunResult
from uda_core.engine.device import resolve_device
from uda_core.engine.events import RollbackEvent, ScoreEvent, StepEvent
from uda_core.errors import UdaError
from uda_core.exports.report import write_run_report
from uda_core.io.atomic import atomic_output
from uda_core.io.files import find_labelled_pairs, fingerprint
from uda_core.methods.base import PAIRED_SOURCE, SOURCE_LABELLED, TARGET, config_from_dict
from uda_core.methods.registry import METHODS, missing_needs
from uda_core.models.bundle import ModelBundle, load_model, save_bundle
from uda_core.tasks.segmentation import SegmentationTask
from uda_core.tasks.segmentation_data import load_adaptation_data


def write_json_atomic(path: Path, content) -> None:
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, default=_json_default)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class MetricsWriter:
    """Listener appending one JSON line per step and per scoring to metrics.jsonl."""

    def __init__(self, path: Path, append: bool = False):
        self.handle = open(path, "a" if append else "w", buffering=1, encoding="utf-8")

    def __call__(self, event) -> None:
        if isinstance(event, StepEvent):
            row = {"step": event.step, "time_s": round(event.elapsed_s, 3),
                   **{f"loss/{k}": v for k, v in event.losses.items()}}
        elif isinstance(event, ScoreEvent):
            row = {"step": event.step, **{f"score/{k}": v for k, v in event.scores.items()},
                   "selection": event.selection, "best": event.is_best}
            if event.reference:
                row.update({f"reference/{k}": v for k, v in event.reference.items()})
        elif isinstance(event, RollbackEvent):
            row = {"step": event.step, "rollback_to": event.to_step, "reason": event.reason}
        else:
            return
        self.handle.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.handle.close()


def check_method(method_name: str, bundle: ModelBundle, provided: set[str]) -> type:
    """The method class, or a UdaError saying what is missing, before anything runs."""
    if method_name not in METHODS:
        raise UdaError(f"unknown method {method_name!r}; choose one of {', '.join(METHODS)}")
    method_cls = METHODS[method_name]
    missing = missing_needs(method_cls, bundle, provided)
    if missing:
        raise UdaError(f"method {method_name} needs " + "; and ".join(missing))
    return method_cls


def run_adaptation(model: str, method_name: str, targets: Sequence[str | Path],
                   out_dir: str | Path, *, paired: Sequence[str | Path] | None = None,
                   source: Sequence[str | Path] | None = None,
                   reference: Sequence[str | Path] | None = None,
                   method_settings: dict | None = None, engine_settings: dict | None = None,
                   device: str = "auto", listeners: Sequence[Callable] = (),
                   control: RunControl | None = None, resume: str | Path | None = None,
                   save_masks: bool = True, overwrite: bool = False,
                   align: str = "auto") -> dict:
    """Adapt `model` to `targets` with `method_name`; returns the run summary (run.json)."""
    out_dir = Path(out_dir)
    adapted_path = out_dir / "adapted.pt"
    if adapted_path.exists() and not overwrite and resume is None:
        raise UdaError(f"{adapted_path} already exists; pass --overwrite or choose another "
                       "--out")
    bundle = load_model(model)
    provided = {TARGET} | ({PAIRED_SOURCE} if paired else set()) | (
        {SOURCE_LABELLED} if source else set())
    method_cls = check_method(method_name, bundle, provided)
    try:
        method_config = config_from_dict(method_cls.config_class, method_settings)
        engine_settings = dict(engine_settings or {})
        engine_settings.setdefault("steps", method_cls.default_steps)
        engine_config = config_from_dict(EngineConfig, engine_settings)
    except (TypeError, ValueError) as exc:
        raise UdaError(f"settings for {method_name}: {exc}") from exc
    if hasattr(method_config, "total_steps"):
        method_config.total_steps = engine_config.steps
    source_pairs = find_labelled_pairs(source) if source else None
    torch_device = resolve_device(device)

    data = load_adaptation_data(bundle, targets, paired=paired, source=source_pairs,
                                reference=reference, align=align)
    network = bundle.build_network(torch_device)
    method = method_cls(network, bundle, method_config, torch_device)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsWriter(out_dir / "metrics.jsonl", append=resume is not None)
    task = SegmentationTask(method, data, engine_config)
    engine = Engine(method, task, engine_config, out_dir, [metrics, *listeners], control)
    started = time.perf_counter()
    try:
        result: RunResult = engine.run(resume_from=resume)
    finally:
        metrics.close()
    seconds = time.perf_counter() - started

    fingerprints = {str(p): fingerprint(p) for p in targets}
    provenance = {
        "parent": bundle.source or model,
        "parent_provenance": bundle.provenance,
        "method": method_name,
        "config": dataclasses.asdict(method_config),
        "engine": dataclasses.asdict(engine_config),
        "data_fingerprints": fingerprints,
        "chosen_step": result.best_step,
        "selected_by": engine_config.select_by,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    adapted = bundle.with_network(network.cpu(), provenance=provenance)  # save_bundle
    # turns numpy numbers, tuples and paths into builtins
    save_bundle(adapted, adapted_path, overwrite=True)
    network.to(torch_device)

    masks = []
    if save_masks:
        masks = _write_masks(network, data, targets, out_dir / "masks", torch_device)
    summary = {
        "status": result.status, "method": method_name, "model": model,
        "steps_done": result.steps_done, "chosen_step": result.best_step,
        "selected_by": engine_config.select_by, "chosen_scores": result.best_scores,
        "seconds": round(seconds, 2),
        "steps_per_second": round(result.steps_done / max(seconds, 1e-9), 3),
        "device": str(torch_device), "targets": [str(t) for t in targets],
        "paired": [str(p) for p in paired] if paired else None,
        "source": [str(s) for s in source] if source else None,
        "reference": [str(r) for r in reference] if reference else None,
        "method_config": dataclasses.asdict(method_config),
        "engine_config": dataclasses.asdict(engine_config),
        "data_fingerprints": fingerprints, "adapted_model": str(adapted_path),
        "masks": [str(m) for m in masks], "package_version": __version__,
    }
    summary["report"] = {k: str(p) for k, p in write_run_report(out_dir, summary).items()}
    write_json_atomic(out_dir / "run.json", summary)
    return summary


def _write_masks(network, data, targets, mask_dir: Path, device) -> list[Path]:
    from uda_core.io.writers import output_stem, write_volume
    from uda_core.models.inference import segment_prepared
    mask_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for volume, model_input, target in zip(data.volumes, data.inputs, targets, strict=True):
        labels = segment_prepared(network, model_input, volume, device)
        path = mask_dir / f"{output_stem(Path(target))}_seg.nii.gz"
        written.append(write_volume(labels.with_data(labels.data, source=None), path,
                                    dtype="uint8", overwrite=True,
                                    inputs=[Path(t) for t in targets]))
    return written

