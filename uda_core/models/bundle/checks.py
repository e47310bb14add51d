"""Consistency checks of a model bundle: fields, class-ratio prior, weights vs architecture.

Every problem is a one-line ModelError naming the file. The bundle layout is described in
:mod:`uda_core.models.bundle`.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from uda_core.errors import ModelError
from uda_core.io.bias_field import N4
from uda_core.models.nets import architecture_class, is_known_architecture, known_architectures

if TYPE_CHECKING:
    from uda_core.models.bundle import ModelBundle

HEAD_PREFIX = "early_head."
#: Architectures whose bundles are registration models (pairs in, displacements out); every
#: other architecture (and a TorchScript file) is a segmentation model.
REGISTRATION_ARCHITECTURES = frozenset({"discrete_regnet"})
TASKS = ("segmentation", "registration")
_AXIS_OF_LETTER = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


def short_list(items: list[str], limit: int = 3) -> str:
    """The first ``limit`` items, comma-separated, with a count of the rest."""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def task_of(architecture: str) -> str:
    """"registration" for a registration architecture, else "segmentation"."""
    return "registration" if architecture in REGISTRATION_ARCHITECTURES else "segmentation"


def instantiate(bundle: ModelBundle, with_head: bool) -> nn.Module:
    """An untrained network of the bundle's architecture (early head when ``with_head``)."""
    cls = architecture_class(bundle.architecture)
    kwargs = bundle.full_arch_kwargs()
    if "early_head" in inspect.signature(cls).parameters:
        kwargs["early_head"] = with_head
    return cls(**kwargs)


def _compare_weights(given: dict, expected: dict, what: str) -> str | None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({short_list(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({short_list(unexpected)})")
        return f"{what} does not fit: " + "; ".join(parts)
    wrong = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(given[k].shape) != tuple(v.shape)]
    if wrong:
        return f"{what} does not fit: tensor shapes differ (file vs network: {short_list(wrong)})"
    return None


def check_architecture(bundle: ModelBundle, path: str | os.PathLike | None) -> None:
    """Weights vs architecture vs class names, on a 'meta' network (no memory used)."""
    arch = bundle.architecture
    if not is_known_architecture(arch):
        raise ModelError(f"unknown architecture {arch!r} (known: "
                         f"{', '.join(known_architectures())})", path)
    params = inspect.signature(architecture_class(arch)).parameters
    unknown = [k for k in bundle.arch_kwargs if k not in params]
    if unknown:
        raise ModelError(f"arch_kwargs for {arch} has unknown arguments: {', '.join(unknown)}",
                         path)
    n_names = len(bundle.class_names)
    kwargs = bundle.full_arch_kwargs()
    for key in ("num_classes", "out_channels"):
        if key in kwargs and kwargs[key] != n_names:
            raise ModelError(f"class-count mismatch: {n_names} class names but the network has "
                             f"{key}={kwargs[key]}", path)
    n_labels = kwargs.get("n_per_axis")
    if arch in REGISTRATION_ARCHITECTURES and isinstance(n_labels, int) \
            and n_labels**2 != n_names:
        raise ModelError(f"label-count mismatch: {n_names} class names but the network has "
                         f"{n_labels}x{n_labels} displacement labels", path)
    try:
        with torch.device("meta"):
            net = instantiate(bundle, with_head=True)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build {arch} with {kwargs}: {exc}", path) from exc
    expected = net.state_dict()
    head_expected = {k[len(HEAD_PREFIX):]: v for k, v in expected.items()
                     if k.startswith(HEAD_PREFIX)}
    main_expected = {k: v for k, v in expected.items() if not k.startswith(HEAD_PREFIX)}
    final = bundle.state_dict.get("final.weight")
    if "final.weight" in main_expected and isinstance(final, Tensor) and final.ndim > 0:
        if final.shape[0] != n_names:
            raise ModelError(f"class-count mismatch: the final layer has {final.shape[0]} "
                             f"outputs but the bundle names {n_names} classes", path)
    problem = _compare_weights(bundle.state_dict, main_expected, f"state dict for {arch}")
    if problem is None and bundle.early_head_state_dict is not None:
        if not head_expected:
            problem = f"{arch} has no early head but the bundle holds early head weights"
        else:
            problem = _compare_weights(bundle.early_head_state_dict, head_expected,
                                       "early head state dict")
    if problem:
        raise ModelError(problem, path)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_prior(prior: Any, n_classes: int) -> str | None:
    if prior is None:
        return None
    if not isinstance(prior, dict):
        return "class_ratio_prior must be a dict"

    def ratios(values: Any) -> bool:
        return (isinstance(values, list) and len(values) == n_classes
                and all(_is_number(v) and v >= 0 for v in values))

    if "constant" in prior and not ratios(prior["constant"]):
        return f"class_ratio_prior 'constant' must hold {n_classes} non-negative numbers"
    positions = prior.get("positions")
    per_position = prior.get("per_position")
    if positions is None and per_position is None:
        return None if "constant" in prior else "class_ratio_prior has no 'constant' ratios"
    if not (isinstance(positions, list) and positions
            and all(_is_number(p) and 0 <= p <= 1 for p in positions)):
        return "class_ratio_prior 'positions' must be numbers between 0 and 1"
    if not (isinstance(per_position, list) and len(per_position) == len(positions)
            and all(ratios(r) for r in per_position)):
        return (f"class_ratio_prior 'per_position' must hold {len(positions)} lists of "
                f"{n_classes} non-negative numbers")
    return None


def _is_weights(weights: Any) -> bool:
    return isinstance(weights, dict) and all(isinstance(k, str) and isinstance(v, Tensor)
                                             for k, v in weights.items())


def _check_fields(b: ModelBundle) -> str | None:
    if not isinstance(b.architecture, str) or not isinstance(b.arch_kwargs, dict):
        return "architecture must be a name and arch_kwargs a dict"
    if not (isinstance(b.class_names, list) and b.class_names
            and all(isinstance(c, str) and c for c in b.class_names)):
        return "class_names must be a non-empty list of names"
    if len(set(b.class_names)) != len(b.class_names):
        return f"class_names has duplicates: {', '.join(b.class_names)}"
    if not (isinstance(b.spacing_mm, list) and len(b.spacing_mm) == 3
            and all(_is_number(s) and s > 0 for s in b.spacing_mm)):
        return "spacing_mm must be 3 positive numbers (mm)"
    if not (isinstance(b.in_plane_shape, list) and len(b.in_plane_shape) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                    for s in b.in_plane_shape)):
        return "in_plane_shape must be 2 positive integers (voxels)"
    if not (isinstance(b.orientation, str)
            and sorted(_AXIS_OF_LETTER.get(c, -1) for c in b.orientation.upper()) == [0, 1, 2]):
        return f"orientation must be 3 letters such as RAS, got {b.orientation!r}"
    if b.slice_axis not in (0, 1, 2) or isinstance(b.slice_axis, bool):
        return "slice_axis must be 0, 1 or 2"
    if not isinstance(b.modality, str):
        return "modality must be a string"
    if not (isinstance(b.normalisation, dict) and isinstance(b.normalisation.get("kind"), str)):
        return "normalisation must be a dict with a 'kind'"
    if not isinstance(b.provenance, dict):
        return "provenance must be a dict"
    if b.skull_stripped_input is not None and not isinstance(b.skull_stripped_input, bool):
        return (f"skull_stripped_input must be true, false or null (unknown), got "
                f"{b.skull_stripped_input!r}")
    problem = _check_volume_fields(b) or _check_intensity_reference(b.intensity_reference,
                                                                     "intensity_reference")
    if problem is None and b.normalisation.get("bias_field") not in (None, N4):
        problem = (f"normalisation.bias_field must be {N4!r} or absent, got "
                   f"{b.normalisation['bias_field']!r}")
    if problem is None and isinstance(b.normalisation.get("match_quantiles"), dict):
        problem = _check_intensity_reference(b.normalisation["match_quantiles"],
                                             "normalisation.match_quantiles")
    if problem:
        return problem
    if not _is_weights(b.state_dict):
        return "state_dict must map names to tensors"
    if b.early_head_state_dict is not None and not _is_weights(b.early_head_state_dict):
        return "early_head_state_dict must map names to tensors"
    return _check_prior(b.class_ratio_prior, len(b.class_names))


def _check_volume_fields(b: ModelBundle) -> str | None:
    """Why ``dims`` / ``window`` / ``imported`` are malformed, or None."""
    if b.dims not in (2, 3) or isinstance(b.dims, bool):
        return f"dims must be 2 or 3, got {b.dims!r}"
    if b.imported is not None and not isinstance(b.imported, dict):
        return "imported must be a dict or null"
    if b.dims == 2:
        return None if b.window is None else "window (sliding-window settings) is for 3D only"
    w = b.window
    if not isinstance(w, dict):
        return "a 3D bundle needs window: {roi_size, overlap, mode, mirror_axes, axes}"
    roi, axes, mirror = w.get("roi_size"), w.get("axes"), w.get("mirror_axes", [])
    if not (isinstance(roi, list) and len(roi) == 3
            and all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in roi)):
        return "window.roi_size must be 3 positive integers (voxels)"
    if not (isinstance(axes, list) and sorted(axes) == [0, 1, 2]):
        return "window.axes must be a permutation of [0, 1, 2]"
    if not (isinstance(mirror, list) and all(a in (0, 1, 2) for a in mirror)):
        return "window.mirror_axes must list network axes among 0, 1, 2"
    overlap = w.get("overlap")
    if not (_is_number(overlap) and 0 <= float(overlap) < 1):  # type: ignore[arg-type]
        return "window.overlap must be a number in [0, 1)"
    if w.get("mode") not in ("gaussian", "constant"):
        return "window.mode must be 'gaussian' or 'constant'"
    return None


def _check_intensity_reference(reference: object, name: str) -> str | None:
    """Why an intensity reference is malformed, or None (None itself is fine)."""
    if reference is None:
        return None
    if not isinstance(reference, dict):
        return f"{name} must be a dict with 'percentiles' and 'values'"
    levels, values = reference.get("percentiles"), reference.get("values")
    if not (isinstance(levels, list) and isinstance(values, list) and len(levels) >= 2
            and len(levels) == len(values) and all(_is_number(v) for v in levels + values)):
        return f"{name} needs 'percentiles' and 'values': two lists of >= 2 numbers, equal length"
    if not (all(0 <= p <= 100 for p in levels)
            and all(a < b for a, b in zip(levels, levels[1:], strict=False))):
        return f"{name}: percentiles must increase within 0..100"
    if not all(a <= b for a, b in zip(values, values[1:], strict=False)):
        return f"{name}: values must not decrease"
    return None


def validate(bundle: ModelBundle, path: str | os.PathLike | None = None) -> None:
    """ModelError (naming ``path``) when the bundle is inconsistent.

    The fields are checked, then a weight bundle's weights against its architecture, or a
    TorchScript bundle's class names against the module's ``num_classes`` (when it has one).
    """
    problem = _check_fields(bundle)
    if problem:
        raise ModelError(problem, path)
    if bundle.torchscript is None:
        check_architecture(bundle, path)
        return
    outputs = getattr(bundle.torchscript, "num_classes", None)
    if isinstance(outputs, int) and outputs != len(bundle.class_names):
        raise ModelError(f"class-count mismatch: {len(bundle.class_names)} class names but the "
                         f"TorchScript network has num_classes={outputs}", path)
