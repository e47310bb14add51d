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
     "normalisation": {...}, "class_ratio_prior": {...} | None, "provenance": {...}}

TorchScript archives (``torch.jit.save``) are accepted too; their metadata is the same dict,
minus the weights, as JSON in the archive's extra file ``uda.json``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import pickle
import pickletools
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from uda_core.errors import ModelError
from uda_core.models.registry import is_builtin_name, resolve_model
from uda_core.models.unet import ARCHITECTURES

BUNDLE_FORMAT = "uda-studio-bundle"
BUNDLE_VERSION = 1
TORCHSCRIPT_METADATA = "uda.json"
_HEAD_PREFIX = "early_head."
_PROBE_SHAPE = (64, 64)


def _default_normalisation() -> dict:
    try:
        from uda_core.io.intensity import DEFAULT_NORMALISATION
    except ImportError:  # the io package not installed yet: the same default, spelled out
        DEFAULT_NORMALISATION = {"kind": "percentile_zscore", "lower_percentile": 0.5,
                                 "upper_percentile": 99.5, "foreground": "otsu"}
    return dict(DEFAULT_NORMALISATION)


@dataclass(eq=False)
class ModelBundle:
    """A network plus what is needed to feed it and to adapt it.

    Defaults (used for TorchScript files without metadata) describe a generic model of 1 mm
    axial RAS slices of 256 x 256 voxels. ``class_ratio_prior``:
    ``{"constant": [C], "positions": [K in 0..1], "per_position": [[C]] * K}`` (fractions of
    each class in a slice, optionally as a function of normalised slice position).
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
    normalisation: dict = field(default_factory=_default_normalisation)
    class_ratio_prior: dict | None = None
    early_head_state_dict: dict[str, Tensor] | None = None
    provenance: dict = field(default_factory=dict)
    torchscript: torch.jit.ScriptModule | None = None
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of output channels (= len(class_names) in a valid bundle)."""
        if self.torchscript is None and self.architecture in ARCHITECTURES:
            value = self.full_arch_kwargs().get("num_classes")
            if isinstance(value, int):
                return value
        return len(self.class_names)

    @property
    def has_early_head(self) -> bool:
        if self.torchscript is not None:
            return (hasattr(self.torchscript, "forward_with_early")
                    and getattr(self.torchscript, "early_head", None) is not None)
        return self.early_head_state_dict is not None

    def full_arch_kwargs(self) -> dict:
        """arch_kwargs completed with the architecture's defaults (``early_head`` left out)."""
        params = inspect.signature(ARCHITECTURES[self.architecture]).parameters
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
        _check_architecture(self, self.source)
        net = _instantiate(self, with_head=self.early_head_state_dict is not None)
        weights = dict(self.state_dict)
        for key, value in (self.early_head_state_dict or {}).items():
            weights[_HEAD_PREFIX + key] = value
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
            arch_kwargs = network.arch_kwargs()
        main, head = _split_weights(network)
        return cls(architecture=architecture, arch_kwargs=dict(arch_kwargs), state_dict=main,
                   class_names=list(class_names), early_head_state_dict=head, **fields)

    def with_network(self, network: nn.Module, **changes: Any) -> ModelBundle:
        """A copy of this bundle with ``network``'s weights (e.g. after adaptation)."""
        if isinstance(network, torch.jit.ScriptModule):
            return dataclasses.replace(self, torchscript=network, **changes)
        main, head = _split_weights(network)
        return dataclasses.replace(self, state_dict=main, early_head_state_dict=head,
                                   torchscript=None, **changes)


def _split_weights(network: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    main: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    for key, value in network.state_dict().items():
        value = value.detach().cpu().clone()
        if key.startswith(_HEAD_PREFIX):
            head[key[len(_HEAD_PREFIX):]] = value
        else:
            main[key] = value
    has_head = getattr(network, "early_head", None) is not None
    return main, (head if has_head else None)


def _instantiate(bundle: ModelBundle, with_head: bool) -> nn.Module:
    cls = ARCHITECTURES[bundle.architecture]
    kwargs = bundle.full_arch_kwargs()
    if "early_head" in inspect.signature(cls).parameters:
        kwargs["early_head"] = with_head
    return cls(**kwargs)


# ---------------------------------------------------------------- validation


def _short(items: list[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _compare_weights(given: dict, expected: dict, what: str) -> str | None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({_short(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({_short(unexpected)})")
        return f"{what} does not fit: " + "; ".join(parts)
    wrong = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(given[k].shape) != tuple(v.shape)]
    if wrong:
        return f"{what} does not fit: tensor shapes differ (file vs network: {_short(wrong)})"
    return None


def _check_architecture(bundle: ModelBundle, path: str | os.PathLike | None) -> None:
    """Weights vs architecture vs class names, on a 'meta' network (no memory used)."""
    arch = bundle.architecture
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})",
                         path)
    params = inspect.signature(ARCHITECTURES[arch]).parameters
    unknown = [k for k in bundle.arch_kwargs if k not in params]
    if unknown:
        raise ModelError(f"arch_kwargs for {arch} has unknown arguments: {', '.join(unknown)}",
                         path)
    n_names = len(bundle.class_names)
    kwargs = bundle.full_arch_kwargs()
    if "num_classes" in kwargs and kwargs["num_classes"] != n_names:
        raise ModelError(f"class-count mismatch: {n_names} class names but the network has "
                         f"num_classes={kwargs['num_classes']}", path)
    try:
        with torch.device("meta"):
            net = _instantiate(bundle, with_head=True)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build {arch} with {kwargs}: {exc}", path) from exc
    expected = net.state_dict()
    head_expected = {k[len(_HEAD_PREFIX):]: v for k, v in expected.items()
                     if k.startswith(_HEAD_PREFIX)}
    main_expected = {k: v for k, v in expected.items() if not k.startswith(_HEAD_PREFIX)}
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


_AXIS_OF_LETTER = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


def _check_fields(bundle: ModelBundle) -> str | None:
    b = bundle
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
    for name in ("state_dict", "early_head_state_dict"):
        weights = getattr(b, name)
        if weights is None and name == "early_head_state_dict":
            continue
        if not (isinstance(weights, dict)
                and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in weights.items())):
            return f"{name} must map names to tensors"
    return _check_prior(b.class_ratio_prior, len(b.class_names))


def validate(bundle: ModelBundle, path: str | os.PathLike | None = None) -> None:
    """ModelError (naming ``path``) when the bundle is inconsistent; see module docstring."""
    problem = _check_fields(bundle)
    if problem:
        raise ModelError(problem, path)
    if bundle.torchscript is None:
        _check_architecture(bundle, path)
        return
    outputs = getattr(bundle.torchscript, "num_classes", None)
    if isinstance(outputs, int) and outputs != len(bundle.class_names):
        raise ModelError(f"class-count mismatch: {len(bundle.class_names)} class names but the "
                         f"TorchScript network has num_classes={outputs}", path)


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
                 "class_ratio_prior", "provenance"):
        meta[name] = _plain(getattr(bundle, name), name)
    return meta


def save_bundle(bundle: ModelBundle, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``bundle`` to ``path`` atomically (temp file + os.replace) and return the path.

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
    if path.exists() and not overwrite:
        raise ModelError("already exists; refusing to overwrite it", path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if bundle.torchscript is not None:
            extra = {TORCHSCRIPT_METADATA: json.dumps(meta)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(bundle.torchscript, tmp, _extra_files=extra)
        else:
            content = dict(meta, state_dict=_weights(bundle.state_dict),
                           early_head_state_dict=_weights(bundle.early_head_state_dict))
            torch.save(content, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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

_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE",
               "BINUNICODE", "BINUNICODE8"}


def _pickle_globals(data: bytes) -> list[str] | None:
    """Names of the globals a pickle stream refers to, found WITHOUT unpickling it.

    None when ``data`` is not a complete pickle stream (random bytes, text...).
    """
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    last: Any = None
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL":
                found.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
            elif name in _STRING_OPS:
                strings.append(str(arg))
                last = str(arg)
                continue
            elif name == "MEMOIZE":
                memo[len(memo)] = last
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = last
            elif name in ("GET", "BINGET", "LONG_BINGET") and isinstance(memo.get(arg), str):
                strings.append(memo[arg])
                last = memo[arg]
                continue
            if name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                last = None
    except Exception:
        return None
    return found


def _python_objects(exc: Exception, path: Path) -> list[str] | None:
    """The non-weight globals that made torch refuse the file, or None if it is no pickle."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if match:
        return [match.group(1)]
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(pkl[0]) if pkl else b""
        else:
            with open(path, "rb") as f:
                data = f.read(64 * 2**20)
    except (OSError, zipfile.BadZipFile):
        return None
    names = _pickle_globals(data)
    if names is None:
        return None
    # what a weights file legitimately refers to: torch tensors/storages and OrderedDict
    return [n for n in names if n != "collections.OrderedDict"
            and not (n.startswith("torch.") and not n.startswith("torch.nn."))]


def _torch_load(path: Path) -> Any:
    if path.stat().st_size == 0:
        raise ModelError("is empty (0 bytes), not a model file", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        objects = _python_objects(exc, path)
        if objects:
            raise ModelError(
                "refused: the file contains Python objects other than weights "
                f"({_short(objects)}), which could run code; UDA Studio loads only plain weight "
                "bundles and TorchScript files", path) from exc
        raise ModelError("is not a PyTorch model file (cannot be read as weights)", path) from exc
    except Exception as exc:
        raise ModelError("is not a PyTorch model file (cannot be read as weights)", path) from exc


_OPTIONAL = ("modality", "spacing_mm", "in_plane_shape", "orientation", "slice_axis",
             "normalisation", "class_ratio_prior", "early_head_state_dict", "provenance")


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
    for name in ("architecture", "arch_kwargs", "state_dict", "class_names"):
        if name not in content:
            raise ModelError(f"bundle field {name!r} is missing", path)
    fields = {k: content[k] for k in ("architecture", "arch_kwargs", "state_dict",
                                      "class_names")}
    fields.update({k: content[k] for k in _OPTIONAL if k in content})
    return ModelBundle(**fields, source=str(path))


def _is_torchscript(path: Path) -> bool:
    """A torch.jit.save archive has '<name>/code/' entries; a torch.save archive does not."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/")[1:2] == ["code"] for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _probe_num_classes(module: torch.jit.ScriptModule, path: Path) -> int:
    value = getattr(module, "num_classes", None)
    if isinstance(value, int) and value > 0:
        return value
    channels = getattr(module, "in_channels", 1)
    channels = channels if isinstance(channels, int) and channels > 0 else 1
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, channels, *_PROBE_SHAPE))
        return int(out.shape[1])
    except Exception as exc:
        raise ModelError(f"TorchScript model without {TORCHSCRIPT_METADATA} metadata: a test "
                         f"slice (1x{channels}x64x64) failed, so its classes are unknown; add "
                         f"{TORCHSCRIPT_METADATA} with class_names", path) from exc


def _load_torchscript(path: Path) -> ModelBundle:
    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise ModelError(f"is a TorchScript archive that cannot be loaded "
                         f"({type(exc).__name__})", path) from exc
    text = extra[TORCHSCRIPT_METADATA]
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    meta: dict = {}
    if text.strip():
        try:
            meta = json.loads(text)
        except ValueError as exc:
            raise ModelError(f"its {TORCHSCRIPT_METADATA} metadata is not valid JSON", path) \
                from exc
        if not isinstance(meta, dict):
            raise ModelError(f"its {TORCHSCRIPT_METADATA} metadata is not a JSON object", path)
        if "format" in meta or "version" in meta:
            _check_format(meta, path)
    names = meta.get("class_names")
    if names is None:
        names = [f"class_{i}" for i in range(_probe_num_classes(module, path))]
    fields = {k: meta[k] for k in _OPTIONAL if k in meta and k != "early_head_state_dict"}
    return ModelBundle(architecture=str(meta.get("architecture", "torchscript")),
                       arch_kwargs=meta.get("arch_kwargs", {}), state_dict={},
                       class_names=names, torchscript=module.eval(), source=str(path),
                       **fields)


def load_model(path_or_name: str | os.PathLike) -> ModelBundle:
    """A bundle from a file, a TorchScript archive, or a built-in name (``demo:brain-t1``).

    Plain files are read with ``torch.load(weights_only=True)`` only: code in a pickle is
    refused, never run. Every problem is a one-line ModelError naming the file.
    """
    path = resolve_model(path_or_name) if is_builtin_name(path_or_name) else Path(path_or_name)
    if not path.exists():
        raise ModelError("model file not found", path)
    if path.is_dir():
        raise ModelError("is a folder, not a model file", path)
    if _is_torchscript(path):
        bundle = _load_torchscript(path)
    else:
        bundle = _bundle_from_dict(_torch_load(path), path)
    validate(bundle, path)
    return bundle


# ---------------------------------------------------------------- description

_AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


def describe(bundle: ModelBundle) -> list[str]:
    """Short human-readable lines for ``uda models`` and the GUI model card."""
    b = bundle
    if b.torchscript is not None:
        known = "" if b.architecture == "torchscript" else f" ({b.architecture})"
        network = f"TorchScript module{known}"
    else:
        args = ", ".join(f"{k}={v}" for k, v in b.full_arch_kwargs().items())
        network = f"{b.architecture} ({args})"
    spacing = " x ".join(f"{s:g}" for s in b.spacing_mm)
    shape = " x ".join(str(s) for s in b.in_plane_shape)
    plane = _AXIS_NAMES.get(b.slice_axis, "?")
    prior = b.class_ratio_prior
    if not prior:
        prior_text = "no"
    elif prior.get("per_position"):
        prior_text = f"yes, per slice position ({len(prior['per_position'])} positions)"
    else:
        prior_text = "yes, constant"
    prov = b.provenance or {}
    lines = [
        f"Network: {network}",
        f"Classes ({len(b.class_names)}): {', '.join(b.class_names)}",
        f"Input: {b.modality}, {spacing} mm, {shape} voxels in-plane, {b.orientation}, "
        f"{plane} slices (axis {b.slice_axis})",
        f"Normalisation: {b.normalisation.get('kind', '?')}",
        f"Early head: {'yes' if b.has_early_head else 'no'}",
        f"Class-ratio prior: {prior_text}",
        f"Parent: {prov.get('parent') or 'none'}; method: {prov.get('method') or 'none'}",
    ]
    if prov.get("date") or prov.get("package_version"):
        version = prov.get("package_version")
        version = f" with UDA Studio {version}" if version else ""
        lines.append(f"Made: {prov.get('date') or 'date unknown'}{version}")
    return lines
