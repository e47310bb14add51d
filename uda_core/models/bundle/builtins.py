"""Built-in models, addressed by name (``demo:brain-t1``)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeGuard

from uda_core.errors import ModelError
from uda_core.io.resources import resources_dir

#: name -> (file relative to resources_dir(), one-line description)
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "demo:brain-t1": (
        "models/brain-t1.pt",
        "2D U-Net, T1w brain tissue: background, CSF, GM, WM; whole heads or skull-stripped "
        "brains (the demo shifts are left for adaptation to recover)",
    ),
    "demo:brain-t1-robust": (
        "models/brain-t1-robust.pt",
        "the same network fine-tuned with contrast augmentation (gamma, intensity curves, "
        "bias, blur, noise); meant as the 'no adaptation needed' anchor, not there yet "
        "(BENCHMARKS.md)",
    ),
    "demo:brain-t1-3d": (
        "models/brain-t1-3d.pt",
        "3D network (MONAI UNet), T1w brain tissue of whole heads on a 2 mm grid, 48^3 voxel "
        "windows; adapts with sfda, tent, adabn, ddm, selftrain",
    ),
    "demo:reg-t1": ("models/reg-t1.pt", "2D discrete registration network, T1-T1"),
}


def is_builtin_name(name: object) -> TypeGuard[str]:
    """True for strings of the form ``demo:...`` (whether or not the name is known)."""
    return isinstance(name, str) and name.startswith("demo:")


def resolve_model(name: str) -> Path:
    """The file of a built-in model. ModelError for an unknown name or a missing file."""
    if name not in BUILTIN_MODELS:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelError(f"unknown built-in model; known models: {known}", name)
    path = resources_dir() / BUILTIN_MODELS[name][0]
    if not path.is_file():
        raise ModelError(
            f"the file of built-in model {name} is missing; reinstall UDA Studio or "
            "regenerate the demo models",
            path,
        )
    return path
