"""Networks, the model bundle format, TorchScript import and the built-in models.

Never imports Qt. ``load_model`` reads files with ``torch.load(weights_only=True)`` only.
"""

from uda_core.models.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    ModelBundle,
    describe,
    export_torchscript,
    load_model,
    save_bundle,
    validate,
)
from uda_core.models.bundle.builtins import BUILTIN_MODELS, resolve_model, resources_dir
from uda_core.models.nets import ARCHITECTURES, UNet2D

__all__ = [
    "ARCHITECTURES",
    "BUILTIN_MODELS",
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "ModelBundle",
    "UNet2D",
    "describe",
    "export_torchscript",
    "load_model",
    "resolve_model",
    "resources_dir",
    "save_bundle",
    "validate",
]
