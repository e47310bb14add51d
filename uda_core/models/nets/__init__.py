"""The networks a bundle can hold, by architecture name."""

from torch import nn

from uda_core.models.nets.blend import BlendNet
from uda_core.models.nets.monai_nets import MONAI_NETWORKS, PREFIX, monai_class
from uda_core.models.nets.plain_unet import PlainConvUNet
from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.models.nets.resenc_unet import ResidualEncoderUNet
from uda_core.models.nets.unet import UNet2D

#: architecture name (as stored in a bundle) -> network class; "discrete_regnet" is the
#: registration network (a bundle of it is a registration model, see bundle.checks.task_of);
#: "nnunet_plain_unet" / "nnunet_resenc_unet" are nnU-Net v2's PlainConvUNet /
#: ResidualEncoderUNet rebuilt (imported nnU-Net models); "blend" two segmentation networks
#: whose class probabilities are mixed (uda_core.models.nets.blend, the `blend` method).
#: MONAI networks ("monai.SegResNet", ...) resolve through :func:`architecture_class`.
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet2d": UNet2D,
                                             "discrete_regnet": DiscreteRegNet,
                                             "nnunet_plain_unet": PlainConvUNet,
                                             "nnunet_resenc_unet": ResidualEncoderUNet,
                                             "blend": BlendNet}


def is_known_architecture(name: object) -> bool:
    """Whether ``name`` is one of ARCHITECTURES or a whitelisted "monai.<Class>"."""
    return isinstance(name, str) and (
        name in ARCHITECTURES
        or (name.startswith(PREFIX) and name.removeprefix(PREFIX) in MONAI_NETWORKS))


def architecture_class(name: str) -> type[nn.Module]:
    """The network class of an architecture name (KeyError when unknown)."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    return monai_class(name)


def known_architectures() -> list[str]:
    """Every architecture name a bundle may hold (for messages)."""
    return [*ARCHITECTURES, *(PREFIX + n for n in MONAI_NETWORKS)]


__all__ = ["ARCHITECTURES", "BlendNet", "DiscreteRegNet", "PlainConvUNet", "ResidualEncoderUNet",
           "UNet2D", "architecture_class", "is_known_architecture", "known_architectures"]
