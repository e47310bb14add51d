"""An nnU-Net v2 result folder read without running its code.

Layout (one trained configuration)::

    <Trainer>__<Plans>__<configuration>/
        plans.json  dataset.json  fold_<k>/checkpoint_final.pth  [postprocessing.pkl ...]

nnU-Net itself loads checkpoints with ``weights_only=False`` (they hold numpy scalars in the
training log) and builds its network class by name (``pydoc.locate``). Here the checkpoint is
read with ``torch.load(weights_only=True)`` under ``torch.serialization.safe_globals`` for
numpy's scalar / dtype / array reconstruction only (any other object is refused, never
run); the network is nnU-Net's PlainConvUNet or ResidualEncoderUNet (the ResEnc presets) rebuilt
from the plans' literal numbers (:mod:`uda_core.models.nets.plain_unet`,
:mod:`uda_core.models.nets.resenc_unet`); postprocessing.pkl (a plain pickle) is never opened.

Preprocessing from plans.json: the configuration's ``spacing`` and ``patch_size`` (network
axis order), ``normalization_schemes`` (ZScore, CT, none, rescale to 0..1) and
``transpose_forward``. nnU-Net reads a file's voxel array through SimpleITK, i.e. (k, j, i)
of the stored array, without reorienting; UDA Studio resamples every input to an RAS grid
first and hands the network the axes (z, y, x) of that grid, permuted by transpose_forward.
For inputs stored in RAS orientation this is exactly nnU-Net's view; for others the network
sees the RAS-reoriented volume (noted in the bundle).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uda_core.errors import ModelError
from uda_core.io.files import fingerprint
from uda_core.models.bundle.checks import short_list
from uda_core.models.imports.files import inside, read_json
from uda_core.models.imports.limits import check_nnunet, check_weights

FORMAT = "nnunet-v2"
PLANS = "plans.json"
DATASET = "dataset.json"
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
#: nnU-Net's network class name -> (our architecture name, its per-encoder-stage count key)
NETWORKS = {PLAIN_UNET: ("nnunet_plain_unet", "n_conv_per_stage"),
            RESENC_UNET: ("nnunet_resenc_unet", "n_blocks_per_stage")}
FOLD_PATTERN = re.compile(r"fold_(\d+|all)$")


def is_nnunet_folder(root: Path) -> bool:
    """Whether a folder looks like an nnU-Net v2 result folder (plans.json + a fold_*)."""
    return (root / PLANS).is_file() and any(FOLD_PATTERN.match(p.name) for p in root.glob("fold_*"))


def _numpy_globals() -> list:
    """numpy's scalar, dtype and array reconstruction, under their numpy 1 and 2 names."""
    core = getattr(np, "_core", None) or np.core
    scalar, reconstruct = core.multiarray.scalar, core.multiarray._reconstruct
    allowed: list = [scalar, reconstruct, np.ndarray, np.dtype,
                     (scalar, "numpy.core.multiarray.scalar"),
                     (reconstruct, "numpy.core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def load_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint, weights_only=True plus numpy scalars; ModelError naming any
    other Python object in it (refused, never run)."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_globals()):
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []
        allowed = {f"{g.__module__}.{g.__qualname__}" if not isinstance(g, tuple) else g[1]
                   for g in _numpy_globals()}
        unsafe = [u for u in unsafe if u not in allowed and not u.startswith("numpy.dtypes.")]
        if unsafe:
            raise ModelError(f"refused: the checkpoint contains Python objects other than "
                             f"weights and numpy numbers ({short_list(unsafe)}), which could "
                             "run code", path) from exc
        raise ModelError(f"is not a readable nnU-Net checkpoint ({type(exc).__name__})",
                         path) from exc
    if not isinstance(content, dict) or not isinstance(content.get("network_weights"), dict):
        raise ModelError("is not an nnU-Net checkpoint (no network_weights)", path)
    return content


def _configuration(root: Path, plans: dict, checkpoint: dict) -> tuple[str, dict]:
    """(name, settings) of the trained configuration, with ``inherits_from`` resolved."""
    configs = plans.get("configurations")
    if not isinstance(configs, dict):
        raise ModelError(f"{PLANS}: no configurations", root)
    init_args = checkpoint.get("init_args")
    init: dict = init_args if isinstance(init_args, dict) else {}
    name = init.get("configuration") or root.name.rsplit("__", 1)[-1]
    if name not in configs:
        raise ModelError(f"{PLANS}: configuration {name!r} not found (has "
                         f"{', '.join(configs)})", root)
    chain, current = [], name
    while current is not None:
        if current in chain or current not in configs:
            raise ModelError(f"{PLANS}: configuration {current!r} inherits from a missing or "
                             "circular parent", root)
        chain.append(current)
        current = configs[current].get("inherits_from")
    settings: dict = {}
    for link in reversed(chain):
        settings.update(configs[link])
    if settings.get("previous_stage"):
        raise ModelError(f"{PLANS}: configuration {name} is a cascade stage (it needs the "
                         "low-resolution stage's predictions); not supported yet", root)
    return name, settings


def _legacy_architecture(settings: dict, root: Path) -> dict:
    """The ``architecture`` entry of plans written before nnU-Net v2.3, which described the
    U-Net by ``UNet_class_name``, ``UNet_base_num_features``, ``unet_max_num_features``,
    ``conv_kernel_sizes``, ``pool_op_kernel_sizes`` and ``n_conv_per_stage_encoder/decoder``
    (conv bias, InstanceNorm eps 1e-5 affine, LeakyReLU 0.01 were fixed then)."""
    if settings.get("UNet_class_name") != "PlainConvUNet":
        raise ModelError(f"{PLANS}: the configuration has no 'architecture' entry and its "
                         f"UNet_class_name {settings.get('UNet_class_name')!r} is not "
                         "PlainConvUNet; not supported yet", root)
    try:
        kernels, strides = settings["conv_kernel_sizes"], settings["pool_op_kernel_sizes"]
        base, top = int(settings["UNet_base_num_features"]), int(settings["unet_max_num_features"])
        encoder = settings["n_conv_per_stage_encoder"]
        decoder = settings["n_conv_per_stage_decoder"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{PLANS}: the pre-v2.3 U-Net description lacks {exc}", root) from None
    dims = len(kernels[0])
    return {"network_class_name": PLAIN_UNET, "arch_kwargs": {
        "n_stages": len(kernels),
        "features_per_stage": [min(base * 2**i, top) for i in range(len(kernels))],
        "conv_op": f"torch.nn.modules.conv.Conv{dims}d", "kernel_sizes": kernels,
        "strides": strides, "n_conv_per_stage": encoder, "n_conv_per_stage_decoder": decoder,
        "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}}


def _arch_kwargs(settings: dict, in_channels: int, num_classes: int,
                 root: Path) -> tuple[str, dict]:
    """(our architecture name, its keyword arguments) from the configuration's plans."""
    arch = settings.get("architecture")
    if not isinstance(arch, dict):
        arch = _legacy_architecture(settings, root)
    if arch.get("network_class_name") not in NETWORKS:
        raise ModelError(f"{PLANS}: network {arch.get('network_class_name')!r} is not "
                         "supported yet (only nnU-Net's PlainConvUNet and "
                         "ResidualEncoderUNet)", root)
    architecture, per_stage_key = NETWORKS[arch["network_class_name"]]
    a = arch.get("arch_kwargs") or {}
    extras = [k for k in ("block", "bottleneck_channels", "stem_channels") if a.get(k)]
    if extras:
        raise ModelError(f"{PLANS}: architecture option {extras[0]!r} is not supported yet "
                         "(only the default basic residual blocks and stem)", root)
    dims = len(settings.get("patch_size", []))
    norm_op = str(a.get("norm_op") or "")
    norm = ("instance" if "InstanceNorm" in norm_op else "batch" if "BatchNorm" in norm_op
            else None if not norm_op else "?")
    nonlin = str(a.get("nonlin") or "")
    nonlin_name = ("leaky_relu" if nonlin.endswith("LeakyReLU") else "relu"
                   if nonlin.endswith(".ReLU") else None if not nonlin else "?")
    if norm == "?" or nonlin_name == "?" or a.get("dropout_op"):
        raise ModelError(f"{PLANS}: norm {norm_op!r} / non-linearity {nonlin!r} / dropout "
                         f"{a.get('dropout_op')!r} not supported yet", root)
    if not str(a.get("conv_op", "")).endswith(f"Conv{dims}d"):
        raise ModelError(f"{PLANS}: conv_op {a.get('conv_op')!r} does not fit a {dims}D "
                         "patch size", root)
    norm_kwargs = a.get("norm_op_kwargs") or {}
    nonlin_kwargs = a.get("nonlin_kwargs") or {}
    try:
        shape = {"features_per_stage": list(a["features_per_stage"]),
                 "kernel_sizes": a["kernel_sizes"], "strides": a["strides"],
                 per_stage_key: a[per_stage_key],
                 "n_conv_per_stage_decoder": a["n_conv_per_stage_decoder"]}
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{PLANS}: the network's arch_kwargs lack {exc}", root) from None
    return architecture, {
        "in_channels": in_channels, "num_classes": num_classes, "dims": dims, **shape,
        "conv_bias": bool(a.get("conv_bias", False)), "norm": norm,
        "norm_eps": float(norm_kwargs.get("eps", 1e-5)),
        "norm_affine": bool(norm_kwargs.get("affine", True)), "nonlin": nonlin_name,
        "negative_slope": float(nonlin_kwargs.get("negative_slope", 0.01))}


def _normalisation(plans: dict, settings: dict, root: Path) -> dict:
    schemes = settings.get("normalization_schemes") or []
    scheme = schemes[0] if schemes else None
    masked = bool((settings.get("use_mask_for_norm") or [False])[0])
    if scheme == "ZScoreNormalization":
        return {"kind": "percentile_zscore", "lower_percentile": 0.0, "upper_percentile": 100.0,
                "foreground": "nonzero" if masked else "all", "keep_zeros": masked}
    if scheme == "CTNormalization":
        props = (plans.get("foreground_intensity_properties_per_channel") or {}).get("0") or {}
        try:
            lo, hi = float(props["percentile_00_5"]), float(props["percentile_99_5"])
            mean, std = float(props["mean"]), max(float(props["std"]), 1e-8)
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{PLANS}: CTNormalization needs foreground intensity "
                             "properties (percentiles, mean, std) of channel 0", root) from None
        return {"kind": "linear", "a_min": lo, "a_max": hi, "b_min": (lo - mean) / std,
                "b_max": (hi - mean) / std, "clip": True}
    if scheme == "NoNormalization":
        return {"kind": "none"}
    if scheme == "RescaleTo01Normalization":
        return {"kind": "minmax", "minv": 0.0, "maxv": 1.0}
    raise ModelError(f"{PLANS}: normalisation {scheme!r} is not supported yet", root)


def _class_names(dataset: dict, root: Path) -> list[str]:
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelError(f"{DATASET}: no labels", root)
    if any(not isinstance(v, int) for v in labels.values()):
        raise ModelError(f"{DATASET}: region-based labels (overlapping regions, sigmoid "
                         "outputs) are not supported yet", root)
    by_value = {v: k for k, v in labels.items() if k != "ignore"}
    if sorted(by_value) != list(range(len(by_value))):
        raise ModelError(f"{DATASET}: labels must be 0..N-1, got {sorted(by_value)}", root)
    return [by_value[i] for i in range(len(by_value))]


def _fold_checkpoint(root: Path, fold: str | None) -> tuple[str, Path]:
    folds = sorted((m.group(1) for p in root.iterdir() if p.is_dir()
                    for m in [FOLD_PATTERN.match(p.name)] if m),
                   key=lambda f: (f == "all", int(f) if f.isdigit() else 0))
    if fold is not None:
        folds = [f for f in folds if f == str(fold)]
    for name in folds:
        for checkpoint in CHECKPOINTS:
            try:
                return name, inside(root, f"fold_{name}/{checkpoint}")
            except FileNotFoundError:
                continue
    raise ModelError(f"no fold_*/{CHECKPOINTS[0]} found" + (f" for fold {fold}" if fold
                                                            else ""), root)


def read_nnunet_folder(root: Path, fold: str | None = None) -> dict[str, Any]:
    """The fields of a ModelBundle for an nnU-Net v2 result folder (one fold; the lowest
    numbered unless ``fold`` is given)."""
    plans, dataset = read_json(root, PLANS), read_json(root, DATASET)
    fold_name, checkpoint_path = _fold_checkpoint(root, fold)
    check_weights(checkpoint_path, _numpy_globals())
    checkpoint = load_checkpoint(checkpoint_path)
    config_name, settings = _configuration(root, plans, checkpoint)
    patch = [int(p) for p in settings.get("patch_size", [])]
    if len(patch) != 3:
        raise ModelError(f"{PLANS}: configuration {config_name} is {len(patch)}D; only 3D "
                         "nnU-Net configurations are supported yet", root)
    channels = dataset.get("channel_names") or dataset.get("modality") or {"0": "unknown"}
    names = _class_names(dataset, root)
    architecture, kwargs = _arch_kwargs(settings, len(channels), len(names), root)
    check_nnunet(settings, kwargs, patch, f"{PLANS}: configurations.{config_name}", root)
    transpose = [int(t) for t in plans.get("transpose_forward", [0, 1, 2])]
    axes = [2 - t for t in transpose]        # RAS grid axis fed as each network axis
    spacing_net = [float(s) for s in settings["spacing"]]
    spacing = [0.0, 0.0, 0.0]
    for net_axis, grid_axis in enumerate(axes):
        spacing[grid_axis] = spacing_net[net_axis]
    mirror = checkpoint.get("inference_allowed_mirroring_axes")
    mirror_axes = [int(a) for a in mirror] if isinstance(mirror, (list, tuple)) else [0, 1, 2]
    imported = {"format": FORMAT, "source": str(root),
                "name": str(dataset.get("name") or root.parent.name),
                "configuration": config_name, "fold": fold_name,
                "checkpoint": checkpoint_path.name,
                "trainer": str(checkpoint.get("trainer_name", "?")),
                "weights_sha256": fingerprint(checkpoint_path),
                "notes": ["inputs are resampled to RAS first; nnU-Net itself uses each "
                          "file's stored voxel order (identical for RAS-stored inputs)"]}
    return {"architecture": architecture, "arch_kwargs": kwargs,
            "state_dict": checkpoint["network_weights"], "class_names": names,
            "modality": str(channels.get("0", "unknown")), "spacing_mm": spacing,
            "normalisation": _normalisation(plans, settings, root),
            "window": {"roi_size": patch, "overlap": 0.5, "mode": "gaussian",
                       "mirror_axes": mirror_axes, "axes": axes},
            "imported": imported}
