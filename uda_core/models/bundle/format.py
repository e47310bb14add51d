"""The model bundle: one file with a network's weights and everything needed to use them.

A bundle file is a plain dict of builtins and tensors, written with ``torch.save`` and read
with ``torch.load(..., weights_only=True)`` only, so a model file from a stranger can never
run code when loaded::

    {"format": "uda-studio-bundle", "version": 1,
     "architecture": "unet2d", "arch_kwargs": {...},
     "state_dict": {name: tensor},               # main network, without the early head
     "early_head_state_dict": {name: tensor} | None,   # the head's own state dict
     "class_names": [...], "modality": "T1w", "spacing_mm": [x, y, z] (mm),
     "in_plane_shape": [X, Y] (voxels), "orientation": "RAS", "slice_axis": 2,
     "normalisation": {...}, "class_ratio_prior": {...} | None, "provenance": {...},
     "skull_stripped_input": true | false | null,   # optional; older bundles lack it
     "intensity_reference": {"percentiles": [K], "values": [K]} | null,   # optional
     "dims": 2 | 3,                      # optional (older bundles: 2, slice networks)
     "window": {...} | null,             # 3D only: sliding-window settings, see ModelBundle
     "imported": {...} | null}           # optional: where an imported network came from

A registration model is the same format with ``"architecture": "discrete_regnet"`` (the
task follows from the architecture; see :mod:`uda_core.models.bundle.registration`): its
``arch_kwargs`` hold the displacement grid (``radius_px``, ``n_per_axis``, ``stride``...), its
``class_names`` name the displacement labels, and it has no early head and no prior.

TorchScript archives (``torch.jit.save``) are accepted too (segmentation only); their metadata
is the same dict, minus the weights, as JSON in the archive's extra file ``uda.json``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from uda_core.errors import ModelError
from uda_core.grid.model_grid import ModelGrid
from uda_core.io.atomic import atomic_output
from uda_core.io.intensity import DEFAULT_NORMALISATION
from uda_core.models.bundle.builtins import is_builtin_name, resolve_model
from uda_core.models.bundle.checks import (
    HEAD_PREFIX,
    TASKS,
    check_architecture,
    instantiate,
    task_of,
    validate,
)
from uda_core.models.bundle.safe_load import (
    TORCHSCRIPT_METADATA,
    is_torchscript,
    load_torchscript,
    load_weights_file,
    probe_num_classes,
)
from uda_core.models.nets import ARCHITECTURES, architecture_class, is_known_architecture
from uda_core.models.nets.blend import BlendNet, unblended

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "TORCHSCRIPT_METADATA", "ModelBundle",
           "bundle_metadata", "describe", "export_torchscript", "load_model", "save_bundle",
           "validate"]

BUNDLE_FORMAT = "uda-studio-bundle"
BUNDLE_VERSION = 1


@dataclass(eq=False)
class ModelBundle:
    """A network plus what is needed to feed it and to adapt it.

    Defaults (used for TorchScript files without metadata) describe a generic model of 1 mm
    axial RAS slices of 256 x 256 voxels. ``class_ratio_prior``:
    ``{"constant": [C], "positions": [K in 0..1], "per_position": [[C]] * K}`` (fractions of
    each class in a slice, optionally as a function of normalised slice position).
    ``skull_stripped_input``: True when the network expects brain-extracted input (it was
    trained on skull-stripped brains), False when it segments whole heads (scalp, skull and
    neck labelled background), None when unknown (bundles written before the field existed).
    ``intensity_reference``: ``{"percentiles": [K], "values": [K]}``, the source training
    data's normalised intensity percentiles inside the head (mean over training volumes, see
    :func:`uda_core.io.intensity.foreground_quantiles`); what intensity standardisation maps
    each target onto (:mod:`uda_core.models.standardise`). None: not recorded.
    ``dims``: 2 for a slice network (images (B, C, X, Y) of the model grid's axial slices),
    3 for a volume network (B, C, *roi) run by sliding window over the whole model grid.
    ``window`` (3D): ``{"roi_size": [3] voxels, "overlap": 0..1, "mode": "gaussian"|"constant",
    "mirror_axes": [network axes to flip and average over at inference], "axes": [3]}``;
    ``axes`` names the model-grid axes (0 = x/R, 1 = y/A, 2 = z/S) in the order the network
    takes them (roi_size and mirror_axes are in that network order); see
    :mod:`uda_core.models.sliding_window`. ``imported``: ``{"format": "monai-bundle" |
    "nnunet-v2", "source": path, "name": ..., ...}`` for a network converted by
    :mod:`uda_core.models.imports`; None for our own.
    ``source`` is the file it was loaded from (for messages; not saved).
    """

    architecture: str
    arch_kwargs: dict
    state_dict: dict[str, Tensor]
    class_names: list[str]
    modality: str = "unknown"
    spacing_mm: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    in_plane_shape: list[int] = field(default_factory=lambda: [256, 256])
    orientation: str = "RAS"
    slice_axis: int = 2
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    class_ratio_prior: dict | None = None
    early_head_state_dict: dict[str, Tensor] | None = None
    provenance: dict = field(default_factory=dict)
    skull_stripped_input: bool | None = None
    intensity_reference: dict | None = None
    dims: int = 2
    window: dict | None = None
    imported: dict | None = None
    torchscript: torch.jit.ScriptModule | None = None
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of output channels (= len(class_names) in a valid bundle)."""
        if self.torchscript is None and is_known_architecture(self.architecture):
            kwargs = self.full_arch_kwargs()
            value = kwargs.get("num_classes", kwargs.get("out_channels"))
            if isinstance(value, int):
                return value
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Input channels the network takes (1 unless its arguments say otherwise)."""
        if self.torchscript is None and is_known_architecture(self.architecture):
            kwargs = self.full_arch_kwargs()
            value = kwargs.get("in_channels", kwargs.get("input_channels", 1))
            if isinstance(value, int):
                return value
        return 1

    @property
    def grid(self) -> ModelGrid:
        """The model grid the network expects (spacing, in-plane shape, orientation, slice
        axis, normalisation) as one value."""
        return ModelGrid.of(self)

    @property
    def task(self) -> str:
        """"segmentation" or "registration" (from the architecture: "discrete_regnet")."""
        return task_of(self.architecture)

    @property
    def has_early_head(self) -> bool:
        if self.torchscript is not None:
            return (hasattr(self.torchscript, "forward_with_early")
                    and getattr(self.torchscript, "early_head", None) is not None)
        return self.early_head_state_dict is not None

    def full_arch_kwargs(self) -> dict:
        """arch_kwargs completed with the architecture's defaults (``early_head`` left out)."""
        params = inspect.signature(architecture_class(self.architecture)).parameters
        kwargs = {k: p.default for k, p in params.items() if p.default is not p.empty}
        kwargs.update(self.arch_kwargs)
        kwargs.pop("early_head", None)
        return kwargs

    def build_network(self, device: str | torch.device = "cpu") -> nn.Module:
        """The network in eval mode with its weights (and early head weights when present).

        For a TorchScript bundle: the scripted module itself. ModelError when the weights do
        not fit the architecture.
        """
        if self.torchscript is not None:
            return self.torchscript.to(device).eval()
        check_architecture(self, self.source)
        net = instantiate(self, with_head=self.early_head_state_dict is not None)
        weights = dict(self.state_dict)
        for key, value in (self.early_head_state_dict or {}).items():
            weights[HEAD_PREFIX + key] = value
        net.load_state_dict(weights, strict=True)
        return net.to(device).eval()

    @classmethod
    def from_network(cls, network: nn.Module, class_names: list[str], *,
                     architecture: str | None = None, arch_kwargs: dict | None = None,
                     **fields: Any) -> ModelBundle:
        """A bundle holding a copy of ``network``'s weights (head weights kept apart)."""
        if architecture is None:
            names = [n for n, c in ARCHITECTURES.items() if type(network) is c]
            if not names:
                raise ValueError(f"unknown architecture {type(network).__name__}; pass it")
            architecture = names[0]
        if arch_kwargs is None:
            # nn.Module.__getattr__ is typed Tensor | Module; our networks define arch_kwargs()
            arch_kwargs = network.arch_kwargs()  # type: ignore[operator]
        main, head = _split_weights(network)
        return cls(architecture=architecture, arch_kwargs=dict(arch_kwargs), state_dict=main,
                   class_names=list(class_names), early_head_state_dict=head, **fields)

    def with_network(self, network: nn.Module, **changes: Any) -> ModelBundle:
        """A copy of this bundle with ``network``'s weights (e.g. after adaptation). A blend
        of weight 0 is saved as its first member; any other blend (another architecture than
        this bundle's) also records its architecture and members."""
        if isinstance(network, torch.jit.ScriptModule):
            return dataclasses.replace(self, torchscript=network, **changes)
        network = unblended(network)
        if isinstance(network, BlendNet):
            changes = {"architecture": "blend", "arch_kwargs": network.arch_kwargs(),
                       **changes}
        main, head = _split_weights(network)
        return dataclasses.replace(self, state_dict=main, early_head_state_dict=head,
                                   torchscript=None, **changes)


def _split_weights(network: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    main: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    for key, value in network.state_dict().items():
        value = value.detach().cpu().clone()
        if key.startswith(HEAD_PREFIX):
            head[key[len(HEAD_PREFIX):]] = value
        else:
            main[key] = value
    has_head = getattr(network, "early_head", None) is not None
    return main, (head if has_head else None)


# ---------------------------------------------------------------- saving


def _plain(value: Any, where: str) -> Any:
    """Metadata as builtins only (numpy numbers, tuples and paths converted)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, Tensor)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"bundle field {where} has non-string keys")
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"bundle field {where} holds a {type(value).__name__}; only numbers, "
                    "strings, lists and dicts can be saved")


def _weights(state: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    if state is None:
        return None
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def bundle_metadata(bundle: ModelBundle) -> dict:
    """Everything but the weights, as builtins (the content of a TorchScript's uda.json)."""
    meta = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION}
    for name in ("architecture", "arch_kwargs", "class_names", "modality", "spacing_mm",
                 "in_plane_shape", "orientation", "slice_axis", "normalisation",
                 "class_ratio_prior", "provenance", "skull_stripped_input",
                 "intensity_reference", "dims", "window", "imported"):
        meta[name] = _plain(getattr(bundle, name), name)
    return meta


def save_bundle(bundle: ModelBundle, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``bundle`` to ``path`` atomically (temporary file + rename); return the path.

    A TorchScript bundle is written with ``torch.jit.save`` and its metadata as ``uda.json``.
    ModelError when the bundle is inconsistent, the folder is missing, or the file exists and
    ``overwrite`` is False.
    """
    path = Path(path)
    meta = bundle_metadata(bundle)
    clean = dataclasses.replace(bundle, **{k: meta[k] for k in meta if k not in
                                           ("format", "version")})
    validate(clean, path)
    if path.is_dir():
        raise ModelError("is a folder; give a file name ending in .pt", path)
    if not path.parent.is_dir():
        raise ModelError("cannot save the model: its folder does not exist", path)
    with atomic_output(path, overwrite=overwrite, exists_error=_refuse_existing) as tmp:
        if bundle.torchscript is not None:
            extra = {TORCHSCRIPT_METADATA: json.dumps(meta)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(bundle.torchscript, str(tmp), _extra_files=extra)
        else:
            content = dict(meta, state_dict=_weights(bundle.state_dict),
                           early_head_state_dict=_weights(bundle.early_head_state_dict))
            torch.save(content, tmp)
    return path


def _refuse_existing(path: Path) -> ModelError:
    return ModelError("already exists; refusing to overwrite it", path)


def export_torchscript(bundle: ModelBundle, path: str | os.PathLike, *,
                       overwrite: bool = False) -> Path:
    """Script the bundle's network (early head included) and save it with its metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(bundle.build_network())
    ts_bundle = dataclasses.replace(bundle, state_dict={}, early_head_state_dict=None,
                                    torchscript=scripted)
    return save_bundle(ts_bundle, path, overwrite=overwrite)


# ---------------------------------------------------------------- loading

_REQUIRED = ("architecture", "arch_kwargs", "state_dict", "class_names")
_OPTIONAL = ("modality", "spacing_mm", "in_plane_shape", "orientation", "slice_axis",
             "normalisation", "class_ratio_prior", "early_head_state_dict", "provenance",
             "skull_stripped_input", "intensity_reference", "dims", "window", "imported")


def _check_format(content: dict, path: Path) -> None:
    fmt = content.get("format")
    if fmt != BUNDLE_FORMAT:
        raise ModelError(f"is not a UDA Studio model bundle (format {fmt!r}, expected "
                         f"{BUNDLE_FORMAT!r})", path)
    version = content.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelError(f"has an invalid bundle version {version!r}", path)
    if version > BUNDLE_VERSION:
        raise ModelError(f"was written by a newer UDA Studio (bundle version {version}; this "
                         f"version reads up to {BUNDLE_VERSION}): update UDA Studio", path)


def _bundle_from_dict(content: Any, path: Path) -> ModelBundle:
    if not isinstance(content, dict):
        raise ModelError(f"is not a UDA Studio model bundle (it holds a {type(content).__name__})",
                         path)
    if "format" not in content:
        if content and all(isinstance(v, Tensor) for v in content.values()):
            raise ModelError("holds a bare state dict without metadata; wrap it in a UDA Studio "
                             "bundle (ModelBundle + save_bundle)", path)
        raise ModelError("is not a UDA Studio model bundle (no 'format' field)", path)
    _check_format(content, path)
    for name in _REQUIRED:
        if name not in content:
            raise ModelError(f"bundle field {name!r} is missing", path)
    fields = {k: content[k] for k in _REQUIRED + _OPTIONAL if k in content}
    return ModelBundle(**fields, source=str(path))


def _bundle_from_torchscript(path: Path) -> ModelBundle:
    module, meta = load_torchscript(path)
    if "format" in meta or "version" in meta:
        _check_format(meta, path)
    names = meta.get("class_names")
    if names is None:
        names = [f"class_{i}" for i in range(probe_num_classes(module, path))]
    fields = {k: meta[k] for k in _OPTIONAL if k in meta and k != "early_head_state_dict"}
    return ModelBundle(architecture=str(meta.get("architecture", "torchscript")),
                       arch_kwargs=meta.get("arch_kwargs", {}), state_dict={},
                       class_names=names, torchscript=module.eval(), source=str(path),
                       **fields)


_TASK_HINTS = {
    "segmentation": "use it with `uda reg apply` / `uda reg adapt`, or give a segmentation "
                    "model such as demo:brain-t1",
    "registration": "registration needs a discrete_regnet bundle such as demo:reg-t1",
}


def load_model(path_or_name: str | os.PathLike,
               task: str | None = "segmentation") -> ModelBundle:
    """A bundle from a file, a TorchScript archive, a built-in name (``demo:brain-t1``), or a
    MONAI bundle / nnU-Net v2 result folder or zip (imported, :mod:`uda_core.models.imports`).

    ``task``: the kind of model the caller needs, "segmentation" (default) or "registration"
    (a ``discrete_regnet`` bundle such as ``demo:reg-t1``); a bundle of the other kind is a
    ModelError. None accepts both (e.g. to describe any model file).

    Plain files are read with ``torch.load(weights_only=True)`` only: code in a pickle is
    refused, never run. Every problem is a one-line ModelError naming the file.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    path = resolve_model(path_or_name) if is_builtin_name(path_or_name) else Path(path_or_name)
    if not path.exists():
        raise ModelError("model file not found", path)
    from uda_core.models.imports import import_model, is_importable
    if is_importable(path):  # a MONAI bundle / nnU-Net folder, or a zip of one
        bundle = import_model(path)
    elif path.is_dir():
        raise ModelError("is a folder but neither a MONAI bundle (configs/metadata.json) nor "
                         "an nnU-Net v2 result folder (plans.json + fold_*/)", path)
    elif is_torchscript(path):
        bundle = _bundle_from_torchscript(path)
    else:
        bundle = _bundle_from_dict(load_weights_file(path), path)
    validate(bundle, path)
    if task is not None and bundle.task != task:
        raise ModelError(f"is a {bundle.task} model ({bundle.architecture}), not a {task} "
                         f"model; {_TASK_HINTS[task]}", path)
    return bundle


# ---------------------------------------------------------------- description

_AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}
_SKULL_STRIPPING = {
    True: "needed (the network expects brain-extracted scans)",
    False: "not needed (the network segments whole heads: scalp, skull and neck are "
           "background)",
    None: "not recorded (older bundle)",
}


_FORMAT_NAMES = {"monai-bundle": "MONAI bundle", "nnunet-v2": "nnU-Net v2 result folder"}
_AXIS_LETTERS = "xyz"


def volume_lines(b: ModelBundle) -> list[str]:
    """What a 3D or imported bundle adds to its description: dimensions and sliding window,
    input channels, where it was imported from."""
    lines = []
    if b.dims == 3 and b.window:
        w = b.window
        order = "".join(_AXIS_LETTERS[a] for a in w["axes"])
        mirror = ", ".join(str(a) for a in w.get("mirror_axes", [])) or "none"
        lines.append(f"Dimensions: 3D; sliding window {' x '.join(map(str, w['roi_size']))} "
                     f"voxels (axes {order}), overlap {w['overlap']:g}, {w['mode']} blending, "
                     f"mirroring axes: {mirror}")
    else:
        lines.append("Dimensions: 2D (slice by slice)")
    if b.in_channels != 1:
        lines.append(f"Input channels: {b.in_channels} (multi-channel input: not supported "
                     "yet)")
    else:
        lines.append("Input channels: 1")
    if b.imported:
        imp = b.imported
        fmt = str(imp.get("format"))
        what = _FORMAT_NAMES.get(fmt, fmt)
        extra = ", ".join(f"{k} {imp[k]}" for k in ("version", "configuration", "fold")
                          if imp.get(k) is not None)
        lines.append(f"Imported from: {what} {imp.get('name', '')}"
                     + (f" ({extra})" if extra else "") + f"; {imp.get('source', '')}")
        lines += [f"Import note: {n}" for n in imp.get("notes", [])]
    return lines


def describe(bundle: ModelBundle) -> list[str]:
    """Short human-readable lines for ``uda models`` and the GUI model card."""
    b = bundle
    if b.torchscript is not None:
        known = "" if b.architecture == "torchscript" else f" ({b.architecture})"
        network = f"TorchScript module{known}"
    elif b.architecture == "blend":
        members = [f"{m['architecture']} ("
                   + ", ".join(f"{k}={v}" for k, v in m["arch_kwargs"].items()) + ")"
                   for m in b.arch_kwargs["members"]]
        weight = float(b.state_dict["weight"]) if "weight" in b.state_dict else float("nan")
        network = (f"blend of {members[0]} and a guide {members[1]}, the guide's share "
                   f"{weight:g}")
    else:
        args = ", ".join(f"{k}={v}" for k, v in b.full_arch_kwargs().items()
                         if v is not None)
        network = f"{b.architecture} ({args})"
    spacing = " x ".join(f"{s:g}" for s in b.spacing_mm)
    shape = " x ".join(str(s) for s in b.in_plane_shape)
    plane = _AXIS_NAMES.get(b.slice_axis, "?")
    prior = b.class_ratio_prior
    if not prior:
        prior_text = "no"
    elif prior.get("per_position"):
        bins = len(prior["per_position"])
        prior_text = (f"yes, per patch (axial position of its centre, {bins} positions)"
                      if b.dims == 3 else f"yes, per slice position ({bins} positions)")
    else:
        prior_text = "yes, constant"
    prov = b.provenance or {}
    if b.task == "registration":
        kwargs = b.full_arch_kwargs()
        n, radius = kwargs.get("n_per_axis"), kwargs.get("radius_px")
        outputs = (f"Task: registration; {len(b.class_names)} displacement labels "
                   f"({n} x {n} candidates within +-{radius:g} pixels, (dy, dx))")
        extras = []
    else:
        outputs = f"Classes ({len(b.class_names)}): {', '.join(b.class_names)}"
        extras = [f"Early head: {'yes' if b.has_early_head else 'no'}",
                  f"Class-ratio prior: {prior_text}"]
    if b.dims == 3 and b.window:
        input_line = f"Input: {b.modality}, {spacing} mm, {b.orientation}, whole volume (3D)"
    else:
        input_line = (f"Input: {b.modality}, {spacing} mm, {shape} voxels in-plane, "
                      f"{b.orientation}, {plane} slices (axis {b.slice_axis})")
    lines = [
        f"Network: {network}",
        outputs,
        input_line,
        *volume_lines(b),
        f"Normalisation: {b.normalisation.get('kind', '?')}"
        + ("; intensities standardised to the source's (quantile matching)"
           if b.normalisation.get("match_quantiles") else ""),
        f"Source intensity reference: {'yes' if b.intensity_reference else 'no'}",
        f"Skull stripping: {_SKULL_STRIPPING.get(b.skull_stripped_input, '?')}",
        *extras,
        f"Parent: {prov.get('parent') or 'none'}; method: {prov.get('method') or 'none'}",
    ]
    if prov.get("date") or prov.get("package_version"):
        version = prov.get("package_version")
        version = f" with UDA Studio {version}" if version else ""
        lines.append(f"Made: {prov.get('date') or 'date unknown'}{version}")
    return lines
