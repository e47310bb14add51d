"""Run checkpoints: network, method state and random state, written atomically and read back
with torch.load(weights_only=True)."""

from __future__ import annotations

from pathlib import Path

import torch

from uda_core.errors import ModelError
from uda_core.io.atomic import atomic_output

CHECKPOINT_FORMAT = "uda-studio-checkpoint"


def save_checkpoint(path: str | Path, content: dict) -> Path:
    """Write `content` (tensors and builtins) to `path` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **content}, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by save_checkpoint; ModelError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("checkpoint not found (a run stopped before its first checkpoint "
                         "has none: start it again without --resume)", path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError("is not a readable UDA Studio checkpoint", path) from exc
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise ModelError("is not a UDA Studio checkpoint", path)
    return content
