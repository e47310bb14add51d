"""One registration adaptation run from files to files: the work behind `uda reg adapt`.

Loads a registration bundle (e.g. ``demo:reg-t1``), builds the target pairs (default: the demo
subjects 100-102 in resources/demo, T1 fixed and T2 moving; or the user's --fixed/--moving
volume pairs), runs :class:`~uda_core.methods.mcd.MCDRegistration` with the shared
:class:`~uda_core.engine.Engine` (events, cancel/pause, checkpoints, resume, label-free
choice of the kept step) and writes

- OUT/adapted.pt: a registration bundle whose provenance names its parent, the method
  (``mcd-<discrepancy>``), its config, the data and the chosen step;
- OUT/metrics.jsonl: one line per step and per scoring;
- OUT/run.json: settings, data, outcome;
- OUT/checkpoints/best.pt and last.pt (resume with ``resume=OUT/checkpoints/last.pt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from uda_core.engine import EngineConfig, RunControl
from uda_core.engine.device import resolve_device
from uda_core.engine.listeners import Listener
from uda_core.errors import UdaError
from uda_core.io.modality import canonical_modality, modality_from_path
from uda_core.methods.base import config_from_dict
from uda_core.methods.mcd import MCDRegistration
from uda_core.models.bundle.registration import (
    load_registration_model,
    make_registration_bundle,
    registration_modalities,
)
from uda_core.runs.workflow import RunPlan, execute_plan, refuse_existing_output, settings_error
from uda_core.tasks.registration import RegistrationTask
from uda_core.tasks.registration_data import demo_files, mono_modal, slices_from_files

__all__ = ["DEFAULT_ENGINE_SETTINGS", "run_reg_adaptation"]

# Engine settings of a registration run unless given (see the EngineConfig fields).
# select_by mutual_info: the label-free score that followed the reference accuracy on the
# validation subjects 40-42 (discrepancy grows as step B wins; entropy barely moves).
DEFAULT_ENGINE_SETTINGS = {"steps": MCDRegistration.default_steps, "score_every": 25,
                           "score_slices": 32, "checkpoint_every": 25,
                           "select_by": "mutual_info"}


def _field_settings(bundle) -> tuple[float, float]:
    """(max_px, smooth_px) of the random fields the source model was trained with."""
    config = (bundle.provenance or {}).get("config") or {}
    return float(config.get("max_px", 5.0)), float(config.get("smooth_px", 8.0))


def run_reg_adaptation(model: str, out_dir: str | Path, *, discrepancy: str = "pemd",
                       fixed: Sequence[str | Path] | None = None,
                       moving: Sequence[str | Path] | None = None,
                       labels: Sequence[str | Path] | None = None, aligned: bool = False,
                       demo_domain: str = "t2", method_settings: dict | None = None,
                       engine_settings: dict | None = None, device: str = "auto",
                       listeners: Sequence[Listener] = (), control: RunControl | None = None,
                       resume: str | Path | None = None, overwrite: bool = False,
                       moving_modality: str | None = None) -> dict:
    """Adapt a registration model to target pairs with MCD; returns the run summary.

    Args:
        model: registration bundle file or built-in name (demo:reg-t1).
        out_dir: output folder (see the module doc).
        discrepancy: "l1", "swd" or "pemd" (overrides method_settings["discrepancy"]).
        fixed, moving: volume pairs (fixed = the source modality, T1), aligned in world space
            (e.g. one session); None: demo subjects 100-102, T1 fixed and `demo_domain`
            moving.
        labels: tissue label maps of the fixed volumes (optional; only for reference
            numbers).
        aligned: the given fixed and moving volumes show the same anatomy at the same world
            coordinates, so the reference accuracy/endpoint error of the scored pairs mean
            something (always true for the demo data). Reference numbers are never used for
            training or for choosing the kept step.
        method_settings: MCDConfig fields; engine_settings: EngineConfig fields
            (defaults: DEFAULT_ENGINE_SETTINGS; batch_size is unused, see source_batch and
            target_batch of MCDConfig).
        resume: a checkpoint of an earlier run into the same out_dir (its last.pt).
        moving_modality: the moving images' modality (e.g. "T2w"), recorded in the adapted
            bundle's ``provenance["modalities"]``; None: the demo domain's, or guessed from
            the moving files' names (left out when no name tells).

    The engine's events reach ``listeners`` and ``control`` cancels or pauses the run
    between steps: this is the function a GUI worker calls (as `uda reg adapt` does).
    """
    out_dir = Path(out_dir)
    refuse_existing_output(out_dir, overwrite, resume)
    if (fixed is None) != (moving is None):
        raise UdaError("give --fixed and --moving together (one moving image per fixed one)")
    name = f"mcd-{discrepancy}"
    try:
        settings = {**(method_settings or {}), "discrepancy": discrepancy}
        method_config = config_from_dict(MCDRegistration.config_class, settings)
        engine_config = config_from_dict(EngineConfig,
                                         {**DEFAULT_ENGINE_SETTINGS, **(engine_settings or {})})
    except (TypeError, ValueError) as exc:
        raise settings_error(name, exc) from exc
    torch_device = resolve_device(device)
    bundle, network = load_registration_model(model, torch_device)

    if fixed is None:
        fixed, moving, labels = demo_files(demo_domain)
        aligned = True
        moving_modality = moving_modality or demo_domain
    assert moving is not None
    guessed = {modality_from_path(p) for p in moving}
    target_modality = canonical_modality(moving_modality) or (
        guessed.pop() if len(guessed) == 1 and None not in guessed else None)
    trained_on = registration_modalities(bundle)["moving"]
    moving_modalities = trained_on + ([target_modality] if target_modality else [])
    inputs = [*fixed, *moving, *(labels or [])]
    for path in inputs:
        if not Path(path).exists():
            raise UdaError(f"{path}: does not exist")
    target = slices_from_files(fixed, moving, labels, grid=bundle)
    max_px, smooth_px = _field_settings(bundle)
    task = RegistrationTask(network, target, mono_modal(target), torch_device,
                            source_batch=method_config.source_batch,
                            target_batch=method_config.target_batch,
                            score_pairs=engine_config.score_slices, seed=engine_config.seed + 1,
                            reference=aligned, max_px=max_px, smooth_px=smooth_px,
                            spacing_mm=bundle.spacing_mm[:2])
    method = MCDRegistration(network, bundle, method_config, torch_device)

    def adapted_bundle(net, provenance):
        return make_registration_bundle(net, modality=bundle.modality,
                                        spacing_mm=bundle.spacing_mm,
                                        in_plane_shape=bundle.in_plane_shape,
                                        normalisation=bundle.normalisation,
                                        provenance=provenance,
                                        moving_modalities=moving_modalities)

    plan = RunPlan(
        name=name, model=model, parent=bundle, method=method, task=task,
        method_config=method_config, engine_config=engine_config, device=torch_device,
        inputs=inputs, make_bundle=adapted_bundle,
        provenance={"task": "registration",
                    "data": {"fixed": [str(p) for p in fixed],
                             "moving": [str(p) for p in moving],
                             "pairs": "fixed slice + moving slice deformed by random smooth "
                                      f"fields (max {max_px:g} px, sigma {smooth_px:g} px)"}},
        summary={"fixed": [str(p) for p in fixed], "moving": [str(p) for p in moving],
                 "labels": [str(p) for p in labels] if labels else None, "aligned": aligned,
                 "pairs": len(target)})
    return execute_plan(plan, out_dir, listeners=listeners, control=control, resume=resume)
