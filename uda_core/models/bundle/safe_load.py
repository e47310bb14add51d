"""Reading model files without ever running code from them.

Weight files are read with ``torch.load(weights_only=True)`` only; when torch refuses one, a
static scan of its pickle stream (never unpickled) names the Python objects it holds.
TorchScript archives (``torch.jit.save``) are recognised by their ``code/`` entries and read
with ``torch.jit.load``, their metadata from the extra file ``uda.json``.
"""

from __future__ import annotations

import json
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from uda_core.errors import ModelError
from uda_core.models.bundle.checks import short_list

TORCHSCRIPT_METADATA = "uda.json"
_PROBE_SHAPE = (64, 64)
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE",
               "BINUNICODE", "BINUNICODE8"}
_MEMO_PUTS = ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT")


def _pickle_globals(data: bytes) -> list[str] | None:
    """Names of the globals a pickle stream refers to, found WITHOUT unpickling it.

    None when ``data`` is not a complete pickle stream (random bytes, text...).
    """
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    last: Any = None  # the string just pushed, if the previous op pushed one
    arg: Any  # the op's argument (int, str, bytes...; None for an op without one)
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
            if name not in _MEMO_PUTS:
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


def load_weights_file(path: Path) -> Any:
    """The content of a ``torch.save`` file, read with ``weights_only=True`` only.

    ModelError when the file is empty, is no PyTorch file, or holds Python objects other
    than weights (refused, never run).
    """
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
                f"({short_list(objects)}), which could run code; UDA Studio loads only plain "
                "weight bundles and TorchScript files", path) from exc
        raise ModelError("is not a PyTorch model file (cannot be read as weights)", path) from exc
    except Exception as exc:
        raise ModelError("is not a PyTorch model file (cannot be read as weights)", path) from exc


def is_torchscript(path: Path) -> bool:
    """A torch.jit.save archive has '<name>/code/' entries; a torch.save archive does not."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/")[1:2] == ["code"] for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict]:
    """The TorchScript module (on the CPU) and its ``uda.json`` metadata ({} when absent).

    ModelError when the archive cannot be loaded or the metadata is not a JSON object.
    """
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
    if not text.strip():
        return module, {}
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"its {TORCHSCRIPT_METADATA} metadata is not valid JSON", path) from exc
    if not isinstance(meta, dict):
        raise ModelError(f"its {TORCHSCRIPT_METADATA} metadata is not a JSON object", path)
    return module, meta


def probe_num_classes(module: torch.jit.ScriptModule, path: Path) -> int:
    """The module's ``num_classes``, else the channels of its output for a blank slice."""
    value = getattr(module, "num_classes", None)
    if isinstance(value, int) and value > 0:
        return value
    channels = getattr(module, "in_channels", 1)
    channels = channels if isinstance(channels, int) and channels > 0 else 1
    shape = "x".join(str(n) for n in (1, channels, *_PROBE_SHAPE))
    module.eval()  # a probe must not update BatchNorm running statistics
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, channels, *_PROBE_SHAPE))
        return int(out.shape[1])
    except Exception as exc:
        raise ModelError(f"TorchScript model without {TORCHSCRIPT_METADATA} metadata: a test "
                         f"slice ({shape}) failed, so its classes are unknown; add "
                         f"{TORCHSCRIPT_METADATA} with class_names", path) from exc
