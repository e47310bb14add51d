"""The MONAI networks a bundle may name, imported only when one is used (MONAI loads slowly).

An imported MONAI bundle's ``_target_`` must be one of :data:`MONAI_NETWORKS` (by class name,
optionally with its ``monai.networks.nets.`` prefix); its architecture is stored as
``"monai.<Class>"`` with literal keyword arguments only, so building it runs no code from the
bundle. Every class here takes (B, in_channels, *spatial) images and returns (B, out_channels,
*spatial) logits.
"""

from __future__ import annotations

import importlib

from torch import nn

PREFIX = "monai."
#: class names in monai.networks.nets whose forward is images -> per-voxel logits
MONAI_NETWORKS = ("UNet", "BasicUNet", "SegResNet", "DynUNet", "AttentionUnet", "VNet",
                  "HighResNet", "UNETR", "SwinUNETR")


def monai_name(target: str) -> str | None:
    """The whitelisted class name a ``_target_`` means, or None when it is not whitelisted."""
    name = target.removeprefix("monai.networks.nets.")
    return name if name in MONAI_NETWORKS else None


def monai_class(architecture: str) -> type[nn.Module]:
    """The class of ``"monai.<Class>"`` (KeyError when not whitelisted)."""
    name = architecture.removeprefix(PREFIX)
    if not architecture.startswith(PREFIX) or name not in MONAI_NETWORKS:
        raise KeyError(architecture)
    module = importlib.import_module("monai.networks.nets")
    return getattr(module, name)
