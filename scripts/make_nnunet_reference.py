"""Regenerate the nnU-Net network references in tests/models/data/: tiny random nnU-Net
networks built by dynamic-network-architectures itself (nnU-Net's own network library), each
with its state dict, an input and its output, so the tests can check that our rebuilds
(uda_core.models.nets.plain_unet, .resenc_unet) compute exactly the same thing:

    nnunet_plainconvunet_reference.pt   PlainConvUNet (nnU-Net's default plans)
    nnunet_resencunet_reference.pt      ResidualEncoderUNet (the ResEnc M/L/XL plans)

Needs dynamic-network-architectures (pip download --no-deps dynamic-network-architectures,
unzip the wheel, put it on PYTHONPATH; its unet module needs neither timm nor einops):

    PYTHONPATH=/path/to/unzipped/wheel python scripts/make_nnunet_reference.py
"""

from pathlib import Path

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

DATA = Path(__file__).resolve().parents[1] / "tests/models/data"
#: plans.json-style arguments (literal values; the classes nnU-Net names by string)
PLAN = {"n_stages": 3, "features_per_stage": [2, 4, 8], "kernel_sizes": [[1, 3, 3], [3, 3, 3],
        [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "nonlin_kwargs": {"inplace": True}}
#: as nnU-Net's ResEnc planner writes it: residual blocks per encoder stage, one conv per
#: decoder stage; 4 stages so that blocks with stride only, with a channel change only, with
#: both and with neither all occur (features 2 -> 2 at stage 1 strides without projecting)
RESENC_PLAN = {"n_stages": 4, "features_per_stage": [2, 2, 4, 8],
               "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
               "strides": [[1, 1, 1], [1, 2, 2], [1, 1, 1], [2, 2, 2]],
               "n_blocks_per_stage": [1, 2, 2, 3], "n_conv_per_stage_decoder": [1, 1, 1],
               "conv_bias": True, "norm_op_kwargs": {"eps": 1e-05, "affine": True},
               "nonlin_kwargs": {"inplace": True}}


def _reference(cls, plan: dict, name: str) -> None:
    torch.manual_seed(0)
    net = cls(input_channels=1, num_classes=3, conv_op=torch.nn.Conv3d,
              norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU, **plan).eval()
    for p in net.parameters():
        p.data.normal_(0.0, 0.3)
    x = torch.randn(1, 1, 4, 8, 8)
    with torch.no_grad():
        y = net(x)
    out = DATA / name
    torch.save({"plan": plan, "num_classes": 3, "state_dict": net.state_dict(), "input": x,
                "output": y}, out)
    print(out, tuple(y.shape), len(net.state_dict()), "tensors")


def main() -> None:
    _reference(PlainConvUNet, PLAN, "nnunet_plainconvunet_reference.pt")
    _reference(ResidualEncoderUNet, RESENC_PLAN, "nnunet_resencunet_reference.pt")


if __name__ == "__main__":
    main()
