"""One segmentation adaptation run from files to files: the work behind `uda adapt` (and the
GUI's Start).

Checks that the method has what it needs before anything runs, prepares the data, and runs
the shared workflow (:mod:`uda_core.runs.workflow`): OUT/adapted.pt (a model bundle whose
provenance names its parent, method, config and data), OUT/metrics.jsonl, OUT/run.json
(settings, data, outcome), OUT/checkpoints/, OUT/report.png and OUT/report.md (curves and a
summary) and, unless turned off, OUT/masks/<stem>_seg.nii.gz on each target's own grid.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from uda_core.engine import EngineConfig, RunControl
from uda_core.engine.device import resolve_device
from uda_core.engine.listeners import Listener
from uda_core.errors import UdaError
from uda_core.exports.masks import write_masks
from uda_core.exports.report import write_run_report
from uda_core.io.files import find_labelled_pairs
from uda_core.methods.base import (
    PAIRED_SOURCE,
    PRIOR,
    SOURCE_LABELLED,
    TARGET,
    AdaptationMethod,
    Batch,
    config_from_dict,
)
from uda_core.methods.registry import METHODS, missing_needs
from uda_core.models.brain_region import extracts_brain
from uda_core.models.bundle import ModelBundle, load_model
from uda_core.models.distributed import is_main, sync_batchnorm
from uda_core.models.input_checks import contrast_disagreement
from uda_core.models.standardise import is_standardised
from uda_core.runs.workflow import RunPlan, execute_plan, refuse_existing_output, settings_error
from uda_core.tasks.segmentation import SegmentationTask
from uda_core.tasks.segmentation_data import load_adaptation_data
from uda_core.tasks.segmentation_patches import PatchSegmentationTask
from uda_core.tasks.standardisation import standardise_as_asked

#: More targets than this: run_adaptation streams them from disk unless told otherwise.
STREAM_ABOVE = 8


@contextlib.contextmanager
def _prepared_cache(out_dir: Path | None) -> Iterator[Path | None]:
    """A hidden folder under `out_dir` for the prepared targets, removed afterwards (None:
    no streaming)."""
    if out_dir is None:
        yield None
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(tempfile.mkdtemp(prefix=".prepared-", dir=out_dir))
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _target_warnings(bundle: ModelBundle, targets: Sequence[str | Path], data,
                     device) -> list[str]:
    """Lines about the targets as a set (rank 0 only; under torchrun the others stay quiet):
    their contrasts disagree. 2D models also look at what the source network recognises
    (8 slices per target); 3D models by the file names only."""
    if len(targets) < 2 or not is_main():
        return []
    network = bundle.build_network(device) if bundle.dims == 2 else None
    inputs = data.inputs   # one target's slices at a time (streamed targets stay on disk)
    slices = ((inputs[k].slices for k in range(len(inputs))) if network is not None
              else None)
    line = contrast_disagreement(targets, slices, network, device)
    return [line] if line else []


def check_method(method_name: str, bundle: ModelBundle,
                 provided: set[str]) -> type[AdaptationMethod[Batch]]:
    """The method class, or a UdaError saying what is missing, before anything runs."""
    if method_name not in METHODS:
        raise UdaError(f"unknown method {method_name!r}; choose one of {', '.join(METHODS)}")
    method_cls = METHODS[method_name]
    missing = missing_needs(method_cls, bundle, provided)
    if missing:
        raise UdaError(f"method {method_name} needs " + "; and ".join(missing))
    return method_cls


def standardise_mode(standardise: bool | str, implied: bool) -> str:
    """"on", "auto" or "off" from run_adaptation's `standardise` (True = "auto") and whether
    the method standardises by itself (`implied`: then "off" becomes "auto")."""
    mode = ("auto" if standardise is True else "off" if standardise is False
            else standardise)
    if mode not in ("on", "auto", "off"):
        raise ValueError(f"standardise must be on, auto or off, not {standardise!r}")
    return "auto" if implied and mode == "off" else mode


def run_adaptation(model: str, method_name: str, targets: Sequence[str | Path],
                   out_dir: str | Path, *, paired: Sequence[str | Path] | None = None,
                   source: Sequence[str | Path] | None = None,
                   reference: Sequence[str | Path] | None = None,
                   method_settings: dict | None = None, engine_settings: dict | None = None,
                   device: str = "auto", listeners: Sequence[Listener] = (),
                   control: RunControl | None = None, resume: str | Path | None = None,
                   save_masks: bool = True, overwrite: bool = False,
                   align: str = "auto", standardise: bool | str = False,
                   stream_targets: bool | None = None,
                   warn: Callable[[str], None] | None = None,
                   note: Callable[[str], None] | None = None) -> dict:
    """Adapt `model` to `targets` with `method_name`; returns the run summary (run.json).

    warn(line): told, before the first step, of what may spoil the run without making it
    wrong (targets that disagree in contrast: models.input_checks.contrast_disagreement);
    the lines are also the summary's "warnings".

    stream_targets: keep the prepared targets on disk (in a hidden folder under OUT, removed
    after the run) instead of in memory, so memory does not grow with their number; None
    (default): when there are more than STREAM_ABOVE targets. The batches are the same.

    standardise: match each target's intensities to the source's first
    (uda_core.models.standardise); implied by the "standardise" method. True or "auto": only
    when the source network scores better on the standardised targets
    (uda_core.tasks.standardisation: "first, do no harm"); "on": always; False or "off":
    never. The summary's "standardised" says what was done, "standardisation" why; note(line)
    is told the verdict before the first step. The adapted bundle of a standardised run
    standardises every scan it is applied to.

    Stop (``control.cancel()``) before the first step raises RunCancelled at the next
    cancellation point (about a second at most: between files, between batches of slices);
    after it, the run stops after the current step, writes its checkpoints and adapted.pt
    (the best weights so far) and no masks (status "cancelled")."""
    out_dir = Path(out_dir)
    refuse_existing_output(out_dir, overwrite, resume)
    bundle = load_model(model)
    provided = {TARGET} | ({PAIRED_SOURCE} if paired else set()) | (
        {SOURCE_LABELLED} if source else set()) | (
        {PRIOR} if (method_settings or {}).get("user_prior") is not None else set())
    method_cls = check_method(method_name, bundle, provided)
    if bundle.dims == 3 and source:
        raise UdaError(f"{bundle.source}: labelled source images for a 3D model are not "
                       "supported yet (3D adaptation takes target volumes, and for ddm their "
                       "paired source-modality images)")
    try:
        method_config = config_from_dict(method_cls.config_class, method_settings)
        engine_settings = dict(engine_settings or {})
        engine_settings.setdefault("steps", method_cls.default_steps)
        engine_settings.setdefault("select_by", method_cls.default_select_by)
        engine_config = config_from_dict(EngineConfig, engine_settings)
        method_cls.check_settings(method_config, bundle)
    except (TypeError, ValueError) as exc:
        raise settings_error(method_name, exc) from exc
    if hasattr(method_config, "total_steps"):
        method_config.total_steps = engine_config.steps
    mode = standardise_mode(standardise, method_cls.standardises_input)
    source_pairs = find_labelled_pairs(source) if source else None
    torch_device = resolve_device(device)
    control = control or RunControl()
    bundle, verdict = standardise_as_asked(bundle, mode, targets, torch_device,
                                           check=control.check)
    if verdict is not None and note is not None:
        note(verdict.line)
    standardise = is_standardised(bundle)

    if stream_targets is None:
        stream_targets = len(targets) > STREAM_ABOVE
    with _prepared_cache(out_dir if stream_targets else None) as cache:
        data = load_adaptation_data(bundle, targets, paired=paired, source=source_pairs,
                                    reference=reference, align=align, cache_dir=cache,
                                    control=control)
        warnings = _target_warnings(bundle, targets, data, torch_device)
        for line in warnings:
            if warn is not None:
                warn(line)
        network = sync_batchnorm(bundle.build_network(torch_device))  # under torchrun
        network = method_cls.wrap_network(network, bundle, method_config, torch_device)
        method = method_cls(network, bundle, method_config, torch_device)
        task_class = PatchSegmentationTask if bundle.dims == 3 else SegmentationTask

        def after_run(summary: dict) -> dict:
            # a stopped run ends now: its masks (a prediction per target) are left to `uda
            # predict --model OUT/adapted.pt`
            stopped = summary["status"] == "cancelled"
            window = bundle.window if bundle.dims == 3 else None
            masks = (write_masks(network, data, targets, out_dir / "masks", torch_device,
                                 window, brain=extracts_brain(bundle))
                     if save_masks and not stopped else [])
            summary["masks"] = [str(m) for m in masks]
            report = write_run_report(out_dir, summary)
            return {"masks": summary["masks"], "report": {k: str(p) for k, p in report.items()}}

        plan = RunPlan(
            name=method_name, model=model, parent=bundle, method=method,
            task=task_class(method, data, engine_config, control),
            method_config=method_config,
            engine_config=engine_config, device=torch_device, inputs=list(targets),
            make_bundle=lambda net, provenance: bundle.with_network(net, provenance=provenance),
            summary={"targets": [str(t) for t in targets],
                     "paired": [str(p) for p in paired] if paired else None,
                     "source": [str(s) for s in source] if source else None,
                     "reference": [str(r) for r in reference] if reference else None,
                     "standardised": bool(standardise),
                     "standardisation": (verdict.as_dict() if verdict is not None
                                         else {"mode": mode}),
                     "warnings": warnings},
            after_run=after_run)
        return execute_plan(plan, out_dir, listeners=listeners, control=control, resume=resume)
