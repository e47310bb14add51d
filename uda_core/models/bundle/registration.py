"""Registration model bundles: a :class:`~uda_core.models.nets.regnet.DiscreteRegNet` in the bundle.

The file format is the model bundle of :mod:`uda_core.models.bundle` (``torch.load(...,
weights_only=True)``); what makes it a registration model is ``architecture =
"discrete_regnet"`` (``bundle.task == "registration"``). Its fields mean:

* ``arch_kwargs``: ``DiscreteRegNet.config`` -- the displacement grid (``radius_px``,
  ``n_per_axis``: candidates ``linspace(-radius_px, radius_px, n)`` per axis, in pixels of the
  model grid), the control-point ``stride`` (pixels), ``features``, ``width``,
  ``smooth_sigma_px`` (dense-field smoothing, pixels) and ``in_channels``.
* ``class_names``: one name per displacement label, in label order ``iy * n + ix``:
  ``"dy=-6,dx=+1.2"`` (candidate displacement in model-grid pixels, rows then columns). There
  are no tissue classes; the heads classify displacements.
* ``modality``: the fixed image's modality the source model was trained on ("T1w").
* ``spacing_mm``, ``in_plane_shape``, ``orientation``, ``slice_axis``, ``normalisation``: the
  model grid both images are resampled to (2 mm, 96 x 112, RAS, axial), as for segmentation;
  one model-grid pixel is ``spacing_mm[0]`` mm along rows (R) and ``spacing_mm[1]`` mm along
  columns (A).
* ``class_ratio_prior`` and ``early_head_state_dict``: None.
* ``provenance``: as for segmentation models, plus ``"task": "registration"``, the
  training/evaluation numbers under ``"summary"`` and ``"modalities"``: ``{"fixed": "T1w",
  "moving": ["T1w", "T2w"]}``, the modalities of the fixed and moving images the network
  was trained or adapted on (canonical names of :mod:`uda_core.io.modality`; bundles
  written before the record read as moving = their ``modality``, see
  :func:`registration_modalities`).
"""

from __future__ import annotations

import datetime as _dt
import os

import torch

from uda_core import __version__
from uda_core.errors import ModelError
from uda_core.grid.model_grid import DEFAULT_GRID, ModelGrid
from uda_core.io.modality import canonical_modality, modality_from_path
from uda_core.models.bundle import ModelBundle, load_model
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.spatial.warp import DisplacementGrid

__all__ = ["REGISTRATION_ARCHITECTURE", "displacement_label_names", "load_registration_model",
           "make_registration_bundle", "modality_mismatch", "network_from_bundle",
           "registration_modalities"]

REGISTRATION_ARCHITECTURE = "discrete_regnet"


def displacement_label_names(grid: DisplacementGrid) -> list[str]:
    """Names of the labels of ``grid`` in label order: ``"dy=<px>,dx=<px>"`` (model pixels)."""
    values = [float(v) for v in grid.values]
    return [f"dy={dy:+.4g},dx={dx:+.4g}" for dy in values for dx in values]


def make_registration_bundle(network: DiscreteRegNet, *, modality: str = "T1w",
                             spacing_mm=DEFAULT_GRID.spacing_mm,
                             in_plane_shape=DEFAULT_GRID.in_plane_shape,
                             normalisation: dict | None = None,
                             provenance: dict | None = None,
                             moving_modalities=None) -> ModelBundle:
    """A registration bundle holding a copy of ``network``'s weights and its model grid.

    The grid (:class:`~uda_core.grid.model_grid.ModelGrid`: ``spacing_mm``, ``in_plane_shape``,
    ``normalisation``, None: the default; RAS, axial) defaults to the demo grid.
    ``in_plane_shape`` (X, Y voxels) must be multiples of the network's stride.
    ``provenance`` gets ``task``, ``date`` and ``package_version`` when it lacks them, and
    ``modalities`` (fixed: ``modality``; moving: ``moving_modalities``, default [modality]).
    """
    if not isinstance(network, DiscreteRegNet):
        raise TypeError(f"network must be a DiscreteRegNet, got {type(network).__name__}")
    grid = ModelGrid(spacing_mm=spacing_mm, in_plane_shape=in_plane_shape,
                     normalisation=normalisation or DEFAULT_GRID.normalisation)
    if any(s % network.stride for s in grid.in_plane_shape):
        raise ValueError(f"in_plane_shape {list(grid.in_plane_shape)} must be multiples of "
                         f"the stride {network.stride}")
    prov: dict = {"task": "registration",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__}
    prov.update(provenance or {})
    fixed = canonical_modality(modality) or str(modality)
    moving = [canonical_modality(m) or str(m) for m in (moving_modalities or [modality])]
    prov["modalities"] = {"fixed": fixed, "moving": sorted(set(moving))}
    state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    return ModelBundle(
        architecture=REGISTRATION_ARCHITECTURE, arch_kwargs=dict(network.config),
        state_dict=state, class_names=displacement_label_names(network.grid),
        modality=str(modality), **grid.bundle_fields(), class_ratio_prior=None,
        early_head_state_dict=None, provenance=prov)


def network_from_bundle(bundle: ModelBundle,
                        device: str | torch.device = "cpu") -> DiscreteRegNet:
    """The bundle's DiscreteRegNet with its weights, on ``device``, in eval mode.

    ModelError (naming the bundle's file) for a segmentation bundle or a TorchScript file.
    """
    if bundle.task != "registration":
        raise ModelError(f"is a {bundle.task} model ({bundle.architecture}), not a "
                         "registration model; registration needs a discrete_regnet bundle "
                         "such as demo:reg-t1", bundle.source)
    if bundle.torchscript is not None:
        raise ModelError("is a TorchScript file; registration models must be weight bundles",
                         bundle.source)
    network = bundle.build_network(device)
    if not isinstance(network, DiscreteRegNet):  # pragma: no cover - registry guarantees it
        raise ModelError(f"architecture {bundle.architecture} is not a DiscreteRegNet",
                         bundle.source)
    return network


def load_registration_model(model: str | os.PathLike | ModelBundle,
                            device: str | torch.device = "cpu"
                            ) -> tuple[ModelBundle, DiscreteRegNet]:
    """(bundle, network in eval mode on ``device``) from a file, a built-in name such as
    ``demo:reg-t1``, or an already loaded bundle. A segmentation model is a one-line
    ModelError naming the file."""
    bundle = model if isinstance(model, ModelBundle) else load_model(model, task="registration")
    return bundle, network_from_bundle(bundle, device)


def registration_modalities(bundle: ModelBundle) -> dict:
    """``{"fixed": name, "moving": [names]}``: what the network was trained/adapted on.

    From ``provenance["modalities"]``; a bundle written before that record: fixed and moving
    = its ``modality`` for a source model, plus (an adapted one, method ``mcd-*``) the
    modality guessed from the names of the moving files it was adapted on.
    """
    provenance = bundle.provenance or {}
    record = provenance.get("modalities")
    if isinstance(record, dict) and record.get("moving"):
        return {"fixed": str(record.get("fixed") or bundle.modality),
                "moving": [str(m) for m in record["moving"]]}
    own = canonical_modality(bundle.modality) or bundle.modality
    moving = {own}
    if str(provenance.get("method", "")).startswith("mcd"):
        files = (provenance.get("data") or {}).get("moving") or []
        moving |= {m for m in (modality_from_path(f) for f in files) if m}
    return {"fixed": own, "moving": sorted(moving)}


def modality_mismatch(bundle: ModelBundle, moving_modality: str | None,
                      fixed_modality: str | None = None) -> str | None:
    """One line when the images' modalities are not those the network was trained or adapted
    on (None when they are, or when a modality is unknown)."""
    known = registration_modalities(bundle)
    name = bundle.source or "the registration model"
    moving = canonical_modality(moving_modality)
    fixed = canonical_modality(fixed_modality)
    problems = []
    if moving and moving not in known["moving"]:
        problems.append(f"moving images {'/'.join(known['moving'])}, not {moving}")
    if fixed and fixed != known["fixed"]:
        problems.append(f"fixed images {known['fixed']}, not {fixed}")
    if not problems:
        return None
    return (f"{name} was trained on {' and '.join(problems)}: its result may be poor; adapt "
            "it to these images with `uda reg adapt --fixed F... --moving MOV...` or use "
            "--method sitk")
