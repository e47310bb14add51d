"""Caps on the sizes an imported model declares, checked before any network is built or any
weight is read into memory: a stranger's plans.json or inference.json that asks for a network
or a window no machine holds is refused in one line naming the file and the key.

Limits (per imported network):

* every number in the network's arguments (channels, widths, counts, image sizes):
  at most :data:`MAX_NUMBER` (8192); every list at most :data:`MAX_LIST` (64) items;
* layers per stage (``num_res_units``, ``n_conv_per_stage``, ``n_blocks_per_stage``,
  ``blocks_down``, ``depths``, ``repeat``...): at most :data:`MAX_REPEATS` (64); kernel sizes
  at most :data:`MAX_KERNEL` (15); nnU-Net ``n_stages`` at most :data:`MAX_LIST`;
* the parameter count estimated from the declared widths: at most :data:`MAX_PARAMETERS`
  (1e9, 4 GB of float32). The estimate is ``k^3 * w^2 * (r + 2)`` summed over every declared
  width ``w`` (``k`` the largest kernel size, default 3; ``r`` the most layers per stage,
  default 2): nnU-Net's 3d_fullres U-Net (32..320 features, 6 stages) gives 3.15e7, its
  real size 3.12e7 parameters;
* the sliding window (roi_size / patch_size): at most :data:`MAX_WINDOW_SIDE` (1024) voxels
  a side and :data:`MAX_WINDOW_VOXELS` (2^24, e.g. 256^3) in all;
* the weights file: its tensors' declared shapes, read with ``torch.load(mmap=True,
  weights_only=True)`` (the file is mapped, no value read): at most :data:`MAX_PARAMETERS`
  values in one tensor and ``4 * MAX_PARAMETERS`` in the file (weights plus an optimiser's
  state). A file in torch's pre-1.6 (non-zip) format cannot be mapped, so its sizes cannot
  be read before its values: it is refused with the advice to save it again with torch.save.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from uda_core.errors import ModelError

MAX_NUMBER = 8192
MAX_LIST = 64
MAX_REPEATS = 64
MAX_KERNEL = 15
MAX_PARAMETERS = 1_000_000_000
MAX_WINDOW_SIDE = 1024
MAX_WINDOW_VOXELS = 2**24
MAX_FILE_VALUES = 4 * MAX_PARAMETERS

#: argument names that are a layer's width (channels / features)
WIDTHS = {"channels", "features", "filters", "features_per_stage", "feature_size",
          "hidden_size", "mlp_dim", "init_filters", "n_features"}
#: argument names that count layers or blocks per stage
REPEATS = {"num_res_units", "n_conv_per_stage", "n_conv_per_stage_decoder",
           "n_blocks_per_stage", "blocks_down", "blocks_up", "depths", "repeat", "num_layers",
           "num_heads"}
KERNELS = {"kernel_size", "up_kernel_size", "kernel_sizes", "upsample_kernel_size"}
STAGES = {"n_stages"}


def _numbers(value: Any, where: str, key: str = "") -> Iterator[tuple[str, str, Any]]:
    """(key path, argument name, value) of every number and list inside ``value``."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _numbers(item, f"{where}.{name}", str(name))
    elif isinstance(value, (list, tuple)):
        yield where, key, value
        for i, item in enumerate(value):
            yield from _numbers(item, f"{where}[{i}]", key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield where, key, value


def check_arguments(args: dict, where: str, root: Path) -> None:
    """ModelError when a network's arguments (``where``: the file and key they came from,
    e.g. "configs/inference.json: network_def") declare a size beyond the limits above."""
    widths: list[float] = []
    kernel, repeats = 3.0, 2.0
    for path, key, value in _numbers(args, where):
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_LIST:
                raise ModelError(f"{path} has {len(value)} items (more than {MAX_LIST}); "
                                 "refused", root)
            continue
        cap = (MAX_REPEATS if key in REPEATS else MAX_KERNEL if key in KERNELS
               else MAX_LIST if key in STAGES else MAX_NUMBER)
        if not value <= cap:       # NaN and infinity too
            raise ModelError(f"{path} is {value:g} (more than {cap}); refused", root)
        if key in WIDTHS:
            widths.append(float(value))
        elif key in KERNELS:
            kernel = max(kernel, float(value))
        elif key in REPEATS:
            repeats = max(repeats, float(value))
    estimate = sum(kernel**3 * w * w * (repeats + 2) for w in widths)
    if estimate > MAX_PARAMETERS:
        raise ModelError(f"{where} declares about {estimate:.2g} parameters (more than "
                         f"{MAX_PARAMETERS:.0e}, from its widths and layers); refused", root)


def check_window(roi: list[int], where: str, root: Path) -> None:
    """ModelError when a sliding window (voxels a side) is beyond the limits above."""
    if any(side > MAX_WINDOW_SIDE for side in roi):
        raise ModelError(f"{where} is {list(roi)} (more than {MAX_WINDOW_SIDE} voxels a side); "
                         "refused", root)
    if math.prod(roi) > MAX_WINDOW_VOXELS:
        raise ModelError(f"{where} is {list(roi)}: {math.prod(roi)} voxels (more than "
                         f"{MAX_WINDOW_VOXELS}); refused", root)


def check_nnunet(settings: dict, kwargs: dict, patch: list[int], where: str,
                 root: Path) -> None:
    """The checks above for an nnU-Net configuration (``where``: "plans.json: configurations.
    <name>"): its patch_size, and its network arguments as the importer will build them
    (``kwargs``) beside those of plans.json (for ``n_stages``)."""
    check_window(patch, f"{where}.patch_size", root)
    architecture = settings.get("architecture")
    raw = architecture.get("arch_kwargs") if isinstance(architecture, dict) else None
    check_arguments({**(raw if isinstance(raw, dict) else {}), **kwargs},
                    f"{where}.architecture.arch_kwargs", root)


def _tensors(value: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _tensors(item, f"{where}.{name}" if where else str(name))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{where}[{i}]")


def check_weights(path: Path, allowed_globals: list | None = None) -> None:
    """ModelError when a weights file's tensors declare more values than the limits above,
    read from their shapes only (the file mapped, not read), and for a file in torch's pre-1.6
    format (not a zip archive: it cannot be mapped). Files torch refuses otherwise are left to
    the loader, which says why."""
    if path.is_file() and not zipfile.is_zipfile(path):
        raise ModelError("saved in torch's pre-1.6 format, whose tensor sizes cannot be checked "
                         "before its values are read; refused (load it with torch and save it "
                         "again with torch.save)", path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed_globals or []):
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return
    total = 0
    for name, tensor in _tensors(content, ""):
        values = math.prod(tensor.shape)
        total += values
        if values > MAX_PARAMETERS:
            raise ModelError(f"tensor {name} declares shape {list(tensor.shape)} ({values:.2g} "
                             f"values, more than {MAX_PARAMETERS:.0e}); refused", path)
    if total > MAX_FILE_VALUES:
        raise ModelError(f"its tensors declare {total:.2g} values (more than "
                         f"{MAX_FILE_VALUES:.0e}); refused", path)
