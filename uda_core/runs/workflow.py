"""One adaptation workflow for every task: plan -> engine with listeners -> exports.

Segmentation (:mod:`uda_core.runs.adapt`) and registration
(:mod:`uda_core.runs.adapt_registration`) only differ in how they build a :class:`RunPlan`
(which data, which task and method, which bundle to write, which files beside it); running it
is this module's :func:`execute_plan`:

- OUT/metrics.jsonl: one line per step, scoring and rollback (rewritten by a new run,
  appended to by a resumed one);
- OUT/checkpoints/best.pt and last.pt (the engine's; resume with ``resume=.../last.pt``);
- OUT/adapted.pt: the parent bundle with the chosen weights and a provenance record naming
  the parent, method, config, data fingerprints and chosen step;
- whatever the plan writes after the run (masks, report), then OUT/run.json: the summary.

A cancelled run (RunControl.cancel, e.g. the first Ctrl-C) ends the same way with status
"cancelled": the best weights so far are saved and the checkpoint can be resumed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uda_core import __version__
from uda_core.engine import Engine, EngineConfig, EngineTask, RunControl, RunResult
from uda_core.engine.listeners import Listener, MetricsWriter
from uda_core.errors import UdaError
from uda_core.exports.json_file import write_json_atomic
from uda_core.io.files import fingerprint
from uda_core.io.folder_lock import hold_folder
from uda_core.methods.base import AdaptationMethod
from uda_core.models.bundle import ModelBundle, save_bundle
from uda_core.models.distributed import is_main, rank, world_size

ADAPTED_NAME = "adapted.pt"


@dataclass
class RunPlan:
    """Everything a run needs, built before anything is written.

    name: the method as recorded ("sfda", "mcd-pemd"); model: what the user named;
    parent: the loaded bundle; inputs: the data files, fingerprinted into the provenance;
    make_bundle(network, provenance): the adapted bundle to save; provenance / summary:
    task-specific entries added to the common ones; after_run(summary): files written after
    the bundle (masks, report), returning entries for the summary.
    """

    name: str
    model: str
    parent: ModelBundle
    method: AdaptationMethod[Any]
    task: EngineTask
    method_config: Any
    engine_config: EngineConfig
    device: torch.device
    inputs: Sequence[str | Path]
    make_bundle: Callable[[torch.nn.Module, dict], ModelBundle]
    provenance: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    after_run: Callable[[dict], dict] | None = None


def refuse_existing_output(out_dir: str | Path, overwrite: bool,
                           resume: str | Path | None) -> Path:
    """OUT/adapted.pt, or a UdaError when it exists and neither overwrite nor resume."""
    adapted = Path(out_dir) / ADAPTED_NAME
    if adapted.exists() and not overwrite and resume is None:
        raise UdaError(f"{adapted} already exists; pass --overwrite or choose another --out")
    return adapted


def settings_error(name: str, exc: Exception) -> UdaError:
    return UdaError(f"settings for {name}: {exc}")


def run_identity(name: str, method_config: dict, engine_config: dict,
                 fingerprints: dict[str, str]) -> dict:
    """What a resume must share with the run it continues: the method, its settings and the
    engine's (the number of steps may grow; the method's total_steps follows it) and the data
    (file contents, in order: renamed or moved files still match)."""
    return {"method": name,
            "settings": {k: v for k, v in method_config.items() if k != "total_steps"},
            "engine settings": {k: v for k, v in engine_config.items() if k != "steps"},
            "data": list(fingerprints.values())}


def execute_plan(plan: RunPlan, out_dir: str | Path, *, listeners: Sequence[Listener] = (),
                 control: RunControl | None = None,
                 resume: str | Path | None = None) -> dict:
    """Run `plan` into `out_dir` (see the module doc); returns the summary (run.json).
    The folder is held for the whole run: a second run into it is refused (io.folder_lock).
    Under torchrun only rank 0 holds the folder, writes files and calls `listeners`; the
    other ranks take part in the run and return a summary of its outcome."""
    if not is_main():
        engine = Engine(plan.method, plan.task, plan.engine_config, None, (), control)
        result = engine.run(resume_from=resume)
        return {"status": result.status, "method": plan.name, "rank": rank(),
                "steps_done": result.steps_done, "chosen_step": result.best_step,
                "outcome": result.outcome}
    with hold_folder(out_dir):
        return _execute(plan, Path(out_dir), listeners, control, resume)


def _execute(plan: RunPlan, out_dir: Path, listeners: Sequence[Listener],
             control: RunControl | None, resume: str | Path | None) -> dict:
    fingerprints = {str(p): fingerprint(p) for p in plan.inputs}
    method_config = dataclasses.asdict(plan.method_config)
    engine_config = dataclasses.asdict(plan.engine_config)
    metrics = MetricsWriter(out_dir / "metrics.jsonl", append=resume is not None)
    engine = Engine(plan.method, plan.task, plan.engine_config, out_dir,
                    [metrics, *listeners], control,
                    identity=run_identity(plan.name, method_config, engine_config,
                                          fingerprints))
    started = time.perf_counter()
    try:
        result: RunResult = engine.run(resume_from=resume)
    finally:
        metrics.close()
    seconds = time.perf_counter() - started
    provenance = {
        "parent": plan.parent.source or plan.model,
        "parent_provenance": plan.parent.provenance,
        "method": plan.name,
        "config": method_config,
        "engine": engine_config,
        "data_fingerprints": fingerprints,
        "chosen_step": result.best_step,
        "selected_by": result.selected_by,
        "kept_source": result.kept_source,
        "status": result.status,
        **plan.provenance,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    adapted_path = out_dir / ADAPTED_NAME
    network = plan.method.network
    save_bundle(plan.make_bundle(network.cpu(), provenance), adapted_path, overwrite=True)
    network.to(plan.device)
    summary = {
        "status": result.status, "method": plan.name, "model": plan.model,
        "steps_done": result.steps_done, "chosen_step": result.best_step,
        "selected_by": result.selected_by, "kept_source": result.kept_source,
        "outcome": result.outcome, "chosen_scores": result.best_scores,
        "seconds": round(seconds, 2),
        "steps_per_second": round(result.steps_done / max(seconds, 1e-9), 3),
        "device": str(plan.device), "threads": torch.get_num_threads(),
        "processes": world_size(), **plan.summary,
        "method_config": method_config, "engine_config": engine_config,
        "data_fingerprints": fingerprints, "adapted_model": str(adapted_path),
        "checkpoint": str(out_dir / "checkpoints" / "last.pt"),
        "package_version": __version__,
    }
    if plan.after_run is not None:
        summary.update(plan.after_run(summary))
    write_json_atomic(out_dir / "run.json", summary)
    return summary
