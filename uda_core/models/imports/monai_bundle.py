"""A MONAI bundle (configs/metadata.json + configs/inference.json + models/model.pt) read
without running any of its code.

MONAI's own ConfigParser evaluates ``$`` expressions with ``eval()`` and builds any
``_target_``; here the JSON is read as data and only what we can reproduce is taken:

* ``network_def``: ``_target_`` one of :data:`~uda_core.models.nets.monai_nets.MONAI_NETWORKS`
  with literal arguments only (any ``$``/``@``/``%`` string, nested ``_target_`` or ``_mode_``
  refused, naming the key);
* ``preprocessing`` transforms: Spacing(d) -> spacing, Orientation(d) (RAS only),
  NormalizeIntensity(d) / ScaleIntensityRange(d) / ScaleIntensity(d) -> normalisation; loading,
  channel and type transforms are neutral; a transform from outside ``monai`` needs the
  bundle's scripts and is refused; a MONAI transform we do not reproduce is refused by name;
  label clean-up after the network (KeepLargestConnectedComponent...) is left out and noted;
* ``inferer``: SlidingWindowInferer's roi_size / overlap / mode (else metadata's input
  spatial_shape as the window);
* ``postprocessing``: softmax + argmax only (a sigmoid output is multi-label: not supported);
* metadata.json ``network_data_format``: input channels, modality, class names.

``configs/logging.conf`` is never opened and ``scripts/`` never imported. The weights are read
with ``torch.load(weights_only=True)``
(:func:`~uda_core.models.bundle.safe_load.load_weights_file`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from uda_core.errors import ModelError
from uda_core.io.files import fingerprint
from uda_core.models.bundle.safe_load import load_weights_file
from uda_core.models.imports.files import inside, read_json
from uda_core.models.imports.limits import check_arguments, check_weights, check_window
from uda_core.models.nets.monai_nets import MONAI_NETWORKS, PREFIX, monai_name

FORMAT = "monai-bundle"
METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
WEIGHTS = "models/model.pt"
FILES = (METADATA, INFERENCE, WEIGHTS)

#: transforms that change nothing we must reproduce (loading, channels, types, bookkeeping)
_NEUTRAL = {"LoadImage", "EnsureChannelFirst", "AddChannel", "EnsureType", "ToTensor",
            "CastToType", "ToNumpy", "Identity", "CopyItems", "DeleteItems", "SelectItems",
            "CropForeground", "Invert", "SaveImage", "AsDiscrete", "Activations",
            "FromMetaTensor", "ToDevice"}
#: postprocessing that edits the label map afterwards: not applied, said in the import notes
_LABEL_CLEANUP = {"KeepLargestConnectedComponent", "FillHoles", "RemoveSmallObjects",
                  "LabelFilter"}
_EXPRESSION = ("$", "@", "%")


def is_monai_bundle(root: Path) -> bool:
    """Whether a folder looks like a MONAI bundle (configs/metadata.json in it)."""
    return (root / METADATA).is_file() or (root / "configs" / "inference.yaml").is_file()


def _expression(value: Any, where: str) -> str | None:
    """The key path of the first expression, reference or macro inside ``value``."""
    if isinstance(value, str) and value.startswith(_EXPRESSION):
        return where
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _expression(item, f"{where}[{i}]")
            if found:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            found = _expression(item, f"{where}.{key}")
            if found:
                return found
    return None


def _literal(value: Any, where: str, root: Path) -> Any:
    """``value`` when it is plain data (numbers, strings, lists, dicts without ``_target_``)."""
    found = _expression(value, where)
    if found:
        raise ModelError(f"{INFERENCE}: {found} is an expression/reference; UDA Studio never "
                         "evaluates bundle code, so the network needs literal arguments", root)
    if isinstance(value, dict):
        keys = [k for k in value if k.startswith("_")]
        if keys:
            raise ModelError(f"{INFERENCE}: {where}.{keys[0]} would build or call an object; "
                             "network arguments must be literal values", root)
    if isinstance(value, (list, dict)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            _literal(item, f"{where}.{key}", root)
    return value


def network_definition(inference: dict, root: Path) -> tuple[str, dict]:
    """("monai.<Class>", literal keyword arguments) from ``network_def``."""
    net = inference.get("network_def")
    if not isinstance(net, dict):
        raise ModelError(f"{INFERENCE}: no network_def object (the network must be defined "
                         "there with a _target_)", root)
    target = net.get("_target_")
    if not isinstance(target, str) or target.startswith(_EXPRESSION):
        raise ModelError(f"{INFERENCE}: network_def._target_ must name a class, got {target!r}",
                         root)
    name = monai_name(target)
    if name is None:
        raise ModelError(f"{INFERENCE}: network_def._target_ {target!r} is not one of the "
                         f"MONAI networks UDA Studio builds ({', '.join(MONAI_NETWORKS)}); "
                         "a network from the bundle's own scripts is never run", root)
    kwargs = {}
    for key, value in net.items():
        if key in ("_target_", "_desc_"):
            continue
        if key.startswith("_"):
            raise ModelError(f"{INFERENCE}: network_def.{key} is not supported (only "
                             "_target_ and literal arguments)", root)
        kwargs[key] = _literal(value, f"network_def.{key}", root)
    return PREFIX + name, kwargs


def _transforms(inference: dict, key: str, root: Path) -> list[tuple[str, dict]]:
    """(short class name without a trailing 'd', arguments) of a Compose's transforms."""
    block = inference.get(key)
    if block is None:
        return []
    if isinstance(block, str):
        raise ModelError(f"{INFERENCE}: {key} is an expression ({block[:40]!r}); it needs the "
                         "bundle's code, which UDA Studio never runs", root)
    items = block.get("transforms", []) if isinstance(block, dict) else block
    if not isinstance(items, list):
        raise ModelError(f"{INFERENCE}: {key}.transforms must be a list", root)
    out = []
    for i, item in enumerate(items):
        target = item.get("_target_") if isinstance(item, dict) else item
        if not isinstance(target, str) or target.startswith(_EXPRESSION):
            raise ModelError(f"{INFERENCE}: {key}.transforms[{i}] is an expression; it needs "
                             "the bundle's code, which UDA Studio never runs", root)
        if "." in target and not target.startswith("monai."):
            raise ModelError(f"{INFERENCE}: {key}.transforms[{i}] is {target}, from the "
                             "bundle's own scripts, which UDA Studio never runs", root)
        name = target.rsplit(".", 1)[-1]
        short = name[:-1] if name.endswith("d") and name[:-1] else name
        out.append((short, item if isinstance(item, dict) else {}))
    return out


def _argument(args: dict, key: str, default: Any, where: str, root: Path) -> Any:
    value = args.get(key, default)
    if isinstance(value, str) and value.startswith(_EXPRESSION):
        raise ModelError(f"{INFERENCE}: {where}.{key} is an expression ({value[:40]!r}); "
                         "UDA Studio needs a literal value there", root)
    return value


def preprocessing(inference: dict, root: Path) -> tuple[list[float] | None, dict, list[str]]:
    """(spacing_mm or None, normalisation, notes) from the preprocessing transforms."""
    spacing = None
    normalisation: dict = {"kind": "none"}
    notes: list[str] = []
    for name, args in _transforms(inference, "preprocessing", root):
        where = f"preprocessing {name}"
        if name == "Spacing":
            pixdim = _argument(args, "pixdim", None, where, root)
            values = pixdim if isinstance(pixdim, list) else [pixdim] * 3
            if len(values) != 3 or not all(isinstance(v, (int, float)) and v > 0
                                           for v in values):
                raise ModelError(f"{INFERENCE}: {where}.pixdim must be 3 positive numbers",
                                 root)
            spacing = [float(v) for v in values]
        elif name == "Orientation":
            codes = _argument(args, "axcodes", "RAS", where, root)
            if codes != "RAS":
                raise ModelError(f"{INFERENCE}: {where}.axcodes is {codes!r}; only RAS "
                                 "networks are supported yet", root)
        elif name == "NormalizeIntensity":
            nonzero = bool(_argument(args, "nonzero", False, where, root))
            for key in ("subtrahend", "divisor"):
                if _argument(args, key, None, where, root) is not None:
                    raise ModelError(f"{INFERENCE}: {where}.{key} is not supported yet", root)
            normalisation = {"kind": "percentile_zscore", "lower_percentile": 0.0,
                             "upper_percentile": 100.0,
                             "foreground": "nonzero" if nonzero else "all",
                             "keep_zeros": nonzero}
        elif name == "ScaleIntensityRange":
            given = {k: _argument(args, k, d, where, root) for k, d in
                     (("a_min", None), ("a_max", None), ("b_min", None), ("b_max", None),
                      ("clip", False))}
            if not all(isinstance(given[k], (int, float)) for k in ("a_min", "a_max")):
                raise ModelError(f"{INFERENCE}: {where} needs numbers a_min and a_max", root)
            normalisation = {"kind": "linear", "a_min": float(given["a_min"]),
                             "a_max": float(given["a_max"]),
                             "b_min": float(given["b_min"] if given["b_min"] is not None
                                            else given["a_min"]),
                             "b_max": float(given["b_max"] if given["b_max"] is not None
                                            else given["a_max"]),
                             "clip": bool(given["clip"])}
        elif name == "ScaleIntensity":
            normalisation = {"kind": "minmax",
                             "minv": float(_argument(args, "minv", 0.0, where, root)),
                             "maxv": float(_argument(args, "maxv", 1.0, where, root))}
        elif name not in _NEUTRAL:
            raise ModelError(f"{INFERENCE}: preprocessing transform {name} is not reproduced "
                             "by UDA Studio yet, so its predictions would differ; refused",
                             root)
    if spacing is None:
        notes.append("no Spacing transform: 1 mm voxels assumed")
    return spacing, normalisation, notes


def _check_postprocessing(inference: dict, root: Path) -> list[str]:
    """Notes on postprocessing left out; ModelError for what changes the outputs' meaning."""
    notes = []
    for name, args in _transforms(inference, "postprocessing", root):
        if name in _LABEL_CLEANUP:
            notes.append(f"postprocessing {name} is not applied (labels as the network "
                         "predicts them)")
            continue
        if name == "Activations" and args.get("sigmoid"):
            raise ModelError(f"{INFERENCE}: postprocessing Activations uses a sigmoid: the "
                             "network's outputs are overlapping labels (multi-label), which "
                             "is not supported yet", root)
        if name not in _NEUTRAL:
            raise ModelError(f"{INFERENCE}: postprocessing transform {name} is not "
                             "reproduced by UDA Studio yet; refused", root)
    return notes


def window_settings(inference: dict, metadata_input: dict, root: Path) -> dict:
    """The sliding-window settings (network axes = RAS grid axes) from the inferer."""
    inferer = inference.get("inferer")
    if isinstance(inferer, dict) and str(inferer.get("_target_", "")).endswith(
            "SlidingWindowInferer"):
        roi = _argument(inferer, "roi_size", None, "inferer", root)
        overlap = _argument(inferer, "overlap", 0.25, "inferer", root)
        mode = _argument(inferer, "mode", "constant", "inferer", root)
    else:
        roi, overlap, mode = metadata_input.get("spatial_shape"), 0.5, "gaussian"
    if isinstance(roi, int):
        roi = [roi] * 3
    if not (isinstance(roi, list) and len(roi) == 3 and all(isinstance(r, int) and r > 0
                                                            for r in roi)):
        raise ModelError(f"{INFERENCE}: no window size (inferer.roi_size, or metadata's input "
                         f"spatial_shape as 3 integers); got {roi!r}", root)
    if mode not in ("gaussian", "constant") or not isinstance(overlap, (int, float)):
        raise ModelError(f"{INFERENCE}: inferer mode {mode!r} / overlap {overlap!r} not "
                         "supported (gaussian or constant, a number)", root)
    return {"roi_size": [int(r) for r in roi], "overlap": float(overlap), "mode": mode,
            "mirror_axes": [], "axes": [0, 1, 2]}


def _window_key(inference: dict) -> str:
    """Where :func:`window_settings` took the window from (for error lines)."""
    inferer = inference.get("inferer")
    if isinstance(inferer, dict) and str(inferer.get("_target_", "")).endswith(
            "SlidingWindowInferer"):
        return f"{INFERENCE}: inferer.roi_size"
    return f"{METADATA}: network_data_format input spatial_shape"


def _state_dict(content: Any, root: Path) -> dict[str, Tensor]:
    """The network's weights: a bare state dict, or {"model": state dict} (CheckpointSaver)."""
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        content = content["model"]
    if not (isinstance(content, dict) and content
            and all(isinstance(v, Tensor) for v in content.values())):
        raise ModelError(f"{WEIGHTS} is not a state dict (names -> tensors)", root)
    return content


def _io_format(metadata: dict, root: Path) -> tuple[dict, dict]:
    fmt = metadata.get("network_data_format")
    if not isinstance(fmt, dict):
        raise ModelError(f"{METADATA}: network_data_format is missing", root)
    inputs, outputs = fmt.get("inputs"), fmt.get("outputs")
    if not (isinstance(inputs, dict) and len(inputs) == 1 and isinstance(outputs, dict)
            and len(outputs) == 1):
        raise ModelError(f"{METADATA}: network_data_format needs one input and one output",
                         root)
    inp, out = next(iter(inputs.values())), next(iter(outputs.values()))
    if not (isinstance(inp, dict) and isinstance(out, dict)):
        raise ModelError(f"{METADATA}: network_data_format input/output must be objects", root)
    return inp, out


def read_monai_bundle(root: Path) -> dict[str, Any]:
    """The fields of a ModelBundle for the MONAI bundle folder ``root`` (not yet validated)."""
    if (root / "configs" / "inference.yaml").is_file() and not (root / INFERENCE).is_file():
        raise ModelError("configs/inference.yaml: YAML bundle configs are not supported yet "
                         "(JSON only)", root)
    metadata, inference = read_json(root, METADATA), read_json(root, INFERENCE)
    architecture, kwargs = network_definition(inference, root)
    check_arguments(kwargs, f"{INFERENCE}: network_def", root)
    spatial_dims = kwargs.get("spatial_dims", kwargs.get("dimensions", 3))
    if spatial_dims != 3:
        raise ModelError(f"{INFERENCE}: network_def.spatial_dims is {spatial_dims}; only 3D "
                         "MONAI networks are supported yet", root)
    inp, out = _io_format(metadata, root)
    spacing, normalisation, notes = preprocessing(inference, root)
    notes += _check_postprocessing(inference, root)
    window = window_settings(inference, inp, root)
    check_window(window["roi_size"], _window_key(inference), root)
    n_out = out.get("num_channels", kwargs.get("out_channels"))
    channel_def = out.get("channel_def") or {}
    if not isinstance(n_out, int) or n_out < 2:
        raise ModelError(f"{METADATA}: the output needs num_channels >= 2 (classes), got "
                         f"{n_out!r}", root)
    check_arguments({"num_channels": n_out}, f"{METADATA}: network_data_format output", root)
    names = [str(channel_def.get(str(i), f"class_{i}")) for i in range(n_out)]
    try:
        weights_path = inside(root, WEIGHTS)
    except FileNotFoundError:
        raise ModelError(f"{WEIGHTS} is missing", root) from None
    check_weights(weights_path)
    state = _state_dict(load_weights_file(weights_path), weights_path)
    modality = str(inp.get("modality", "unknown"))
    imported = {"format": FORMAT, "source": str(root),
                "name": str(metadata.get("name", root.name)),
                "version": str(metadata.get("version", "?")),
                "weights_sha256": fingerprint(weights_path), "notes": notes}
    return {"architecture": architecture, "arch_kwargs": kwargs, "state_dict": state,
            "class_names": names, "modality": modality,
            "spacing_mm": spacing or [1.0, 1.0, 1.0], "normalisation": normalisation,
            "window": window, "imported": imported}
