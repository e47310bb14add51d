"""Where the shipped resources (demo models, demo data, the template) live."""

from __future__ import annotations

import os
from pathlib import Path


def resources_dir() -> Path:
    """The resources folder: env ``UDA_RESOURCES`` if set, else ``<repo>/resources``."""
    override = os.environ.get("UDA_RESOURCES")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "resources"
