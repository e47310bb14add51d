"""Where the shipped resources (demo models, demo data, the template) live.

In a source checkout (this file's ``../../pyproject.toml`` exists) they are the checkout's own
``resources/``, so each checkout or worktree sees its own. Installed from a wheel they are the
package ``uda_core._resources`` (setup.py installs ``resources/`` under that name), found
through :mod:`importlib.resources`.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path

#: The import name the resources are installed under.
RESOURCES_PACKAGE = "uda_core._resources"


def resources_dir() -> Path:
    """The resources folder: env ``UDA_RESOURCES`` if set, else ``<repo>/resources`` of the
    source checkout this module lives in, else the installed ``uda_core._resources`` package."""
    override = os.environ.get("UDA_RESOURCES")
    if override:
        return Path(override).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "resources").is_dir():
        return checkout / "resources"
    installed = _installed_resources()
    if installed is not None:
        return installed
    return checkout / "resources"   # neither: the error names the folder that was looked for


def _installed_resources() -> Path | None:
    try:
        spec = importlib.util.find_spec(RESOURCES_PACKAGE)
    except ModuleNotFoundError:
        return None
    if spec is None:
        return None
    folder = importlib.resources.files(RESOURCES_PACKAGE)
    # A wheel installs plain files, so the Traversable is a real folder on disk.
    path = Path(str(folder))
    return path if path.is_dir() else None
