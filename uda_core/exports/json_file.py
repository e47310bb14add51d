"""JSON files a run leaves (run.json, benchmark records), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from uda_core.io.atomic import atomic_output


def write_json_atomic(path: Path, content: Any) -> None:
    """Write `content` as indented JSON (numpy numbers and paths become builtins)."""
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
