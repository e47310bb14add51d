"""The model bundle: one ``.pt`` file loadable with ``torch.load(weights_only=True)``.

format.py: the bundle (fields, save, load, describe, TorchScript); checks.py: what a loaded
file must satisfy; safe_load.py: reading a file without running its code; builtins.py: the
shipped models by name (``demo:brain-t1``); registration.py: registration bundles.
"""

from uda_core.models.bundle.format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    ModelBundle,
    bundle_metadata,
    describe,
    export_torchscript,
    load_model,
    save_bundle,
    validate,
)

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "ModelBundle", "bundle_metadata", "describe",
           "export_torchscript", "load_model", "save_bundle", "validate"]
