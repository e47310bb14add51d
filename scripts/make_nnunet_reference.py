"""Regenerate tests/models/data/nnunet_plainconvunet_reference.pt: a tiny random nnU-Net
PlainConvUNet built by dynamic-network-architectures itself (nnU-Net's own network library),
its state dict, an input and its output, so the test can check that our rebuild
(uda_core.models.nets.plain_unet) computes exactly the same thing.

Needs dynamic-network-architectures (pip download --no-deps dynamic-network-architectures,
unzip the wheel, put it on PYTHONPATH; its unet module needs neither timm nor einops):

    PYTHONPATH=/path/to/unzipped/wheel python scripts/make_nnunet_reference.py
"""

from pathlib import Path

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

OUT = Path(__file__).resolve().parents[1] / "tests/models/data/nnunet_plainconvunet_reference.pt"
#: plans.json-style arguments (literal values; the classes nnU-Net names by string)
PLAN = {"n_stages": 3, "features_per_stage": [2, 4, 8], "kernel_sizes": [[1, 3, 3], [3, 3, 3],
        [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "nonlin_kwargs": {"inplace": True}}


def main() -> None:
    torch.manual_seed(0)
    net = PlainConvUNet(input_channels=1, num_classes=3, conv_op=torch.nn.Conv3d,
                        norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU,
                        **PLAN).eval()
    for p in net.parameters():
        p.data.normal_(0.0, 0.3)
    x = torch.randn(1, 1, 4, 8, 8)
    with torch.no_grad():
        y = net(x)
    torch.save({"plan": PLAN, "num_classes": 3, "state_dict": net.state_dict(), "input": x,
                "output": y}, OUT)
    print(OUT, tuple(y.shape))


if __name__ == "__main__":
    main()
