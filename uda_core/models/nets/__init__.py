"""The networks a bundle can hold, by architecture name."""

from torch import nn

from uda_core.models.nets.regnet import DiscreteRegNet
from uda_core.models.nets.unet import UNet2D

#: architecture name (as stored in a bundle) -> network class; "discrete_regnet" is the
#: registration network (a bundle of it is a registration model, see bundle.checks.task_of)
ARCHITECTURES: dict[str, type[nn.Module]] = {"unet2d": UNet2D,
                                             "discrete_regnet": DiscreteRegNet}

__all__ = ["ARCHITECTURES", "DiscreteRegNet", "UNet2D"]
