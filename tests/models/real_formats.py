"""Real MONAI bundles and nnU-Net v2 result folders, made in the test run (no mocks).

``make_monai_bundle``: MONAI's own ``init_bundle`` writes the bundle skeleton (configs/,
models/model.pt, docs/, LICENSE); a tiny 3D MONAI UNet (BatchNorm) is trained for a few steps
on 32^3 patches of a demo T1 volume and its state dict saved as models/model.pt; the configs are
filled in the way a bundle author does (network_def, preprocessing with Spacingd / Orientationd
/ NormalizeIntensityd, a SlidingWindowInferer, metadata's network_data_format).

``make_nnunet_folder``: plans.json / dataset.json in nnU-Net v2's layout and
fold_0/checkpoint_final.pth with the entries nnU-Net's trainer writes (network_weights,
optimizer_state, numpy float64 scalars in _best_ema and the logging lists, init_args with
the plans, inference_allowed_mirroring_axes), the weights of a PlainConvUNet trained a few
steps on the same demo data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from uda_core.grid.prepare import labels_to_grid, prepare_volume_3d
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.nets.plain_unet import PlainConvUNet
from uda_core.models.nets.resenc_unet import ResidualEncoderUNet

ROOT = Path(__file__).resolve().parents[2]
DEMO_T1 = ROOT / "resources/demo/t1/sub-100_t1.nii.gz"
DEMO_LABELS = ROOT / "resources/demo/t1/sub-100_labels.nii.gz"
CLASSES = ["background", "CSF", "GM", "WM"]
MONAI_NET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 4,
             "channels": [4, 8], "strides": [2], "num_res_units": 0, "norm": "batch"}
ZSCORE_ALL = {"kind": "percentile_zscore", "lower_percentile": 0.0, "upper_percentile": 100.0,
              "foreground": "all", "keep_zeros": False}


def demo_grid(normalisation: dict, spacing=(2.0, 2.0, 2.0)) -> tuple[np.ndarray, np.ndarray]:
    """The demo T1 (X, Y, Z) float32 and labels (X, Y, Z) int64 on a 2 mm RAS grid."""
    volume = read_volume(DEMO_T1)
    model_input = prepare_volume_3d(volume, list(spacing), normalisation)
    labels = labels_to_grid(read_labels(DEMO_LABELS), model_input)
    return np.moveaxis(model_input.slices, 0, -1), np.moveaxis(labels, 0, -1)


def train_a_few_steps(network: torch.nn.Module, steps: int = 3, patch: int = 32,
                      seed: int = 0, axes=(0, 1, 2)) -> torch.nn.Module:
    """A few Adam steps of cross-entropy on random patches (network axes = ``axes`` of the
    demo grid)."""
    image, labels = demo_grid(ZSCORE_ALL)
    image, labels = np.transpose(image, axes), np.transpose(labels, axes)
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    network.train()
    for _ in range(steps):
        corner = [int(rng.integers(0, s - patch + 1)) for s in image.shape]
        box = tuple(slice(c, c + patch) for c in corner)
        x = torch.from_numpy(np.ascontiguousarray(image[box]))[None, None]
        y = torch.from_numpy(np.ascontiguousarray(labels[box]))[None]
        loss = torch.nn.functional.cross_entropy(network(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return network.eval()


def monai_unet(net_def: dict = MONAI_NET) -> torch.nn.Module:
    from monai.networks.nets import UNet
    kwargs = {k: v for k, v in net_def.items() if k != "_target_"}
    return UNet(**kwargs)


def make_monai_bundle(folder: Path, network: torch.nn.Module | None = None,
                      net_def: dict = MONAI_NET, roi: int = 32, overlap: float = 0.25,
                      spacing: float = 2.0) -> Path:
    """A MONAI bundle folder; by default with a tiny UNet trained a few steps (``network``:
    the ``net_def`` network to save instead). Returns the folder."""
    from monai.bundle import init_bundle

    torch.manual_seed(0)
    network = network if network is not None else train_a_few_steps(monai_unet())
    init_bundle(str(folder), network=network)
    configs = folder / "configs"
    inference = json.loads((configs / "inference.json").read_text())
    inference["network_def"] = dict(net_def)
    inference["preprocessing"]["transforms"] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [spacing] * 3, "mode": "bilinear"},
        {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": False},
        {"_target_": "EnsureTyped", "keys": "image", "device": "@device"},
    ]
    inference["inferer"] = {"_target_": "SlidingWindowInferer", "roi_size": [roi] * 3,
                            "sw_batch_size": 2, "overlap": overlap, "mode": "gaussian"}
    (configs / "inference.json").write_text(json.dumps(inference, indent=4))
    metadata = json.loads((configs / "metadata.json").read_text())
    metadata["name"] = "tiny_brain_tissue"
    metadata["network_data_format"] = {
        "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR",
                             "num_channels": 1, "spatial_shape": [roi] * 3,
                             "dtype": "float32", "value_range": [], "is_patch_data": True,
                             "channel_def": {"0": "T1"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 4,
                             "spatial_shape": [roi] * 3, "dtype": "float32",
                             "value_range": [0, 1], "is_patch_data": True,
                             "channel_def": {str(i): n for i, n in enumerate(CLASSES)}}}}
    (configs / "metadata.json").write_text(json.dumps(metadata, indent=4))
    return folder


#: a tiny 3D PlainConvUNet in plans.json's own terms (network axes; patch 32^3 at 2 mm)
NNUNET_ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16],
                    "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
                    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                    "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2],
                    "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                    "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                    "nonlin_kwargs": {"inplace": True}},
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


#: the same sizes as nnU-Net's ResEnc planner writes them (residual blocks per encoder stage)
RESENC_ARCH = {
    "network_class_name":
        "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "arch_kwargs": {**{k: v for k, v in NNUNET_ARCH["arch_kwargs"].items()
                       if k != "n_conv_per_stage"},
                    "n_blocks_per_stage": [1, 2, 2], "n_conv_per_stage_decoder": [1, 1]},
    "_kw_requires_import": NNUNET_ARCH["_kw_requires_import"]}


def nnunet_network(arch: dict = NNUNET_ARCH) -> torch.nn.Module:
    """Our rebuild of the plans' network (PlainConvUNet or ResidualEncoderUNet)."""
    a = arch["arch_kwargs"]
    shape = {"in_channels": 1, "num_classes": 4, "dims": 3,
             "features_per_stage": a["features_per_stage"], "kernel_sizes": a["kernel_sizes"],
             "strides": a["strides"], "n_conv_per_stage_decoder": a["n_conv_per_stage_decoder"]}
    if "n_blocks_per_stage" in a:
        return ResidualEncoderUNet(n_blocks_per_stage=a["n_blocks_per_stage"], **shape)
    return PlainConvUNet(n_conv_per_stage=a["n_conv_per_stage"], **shape)


def make_nnunet_folder(parent: Path, network: torch.nn.Module | None = None,
                       extra_checkpoint: dict | None = None, arch: dict = NNUNET_ARCH) -> Path:
    """Dataset900_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres/ under ``parent``, its network
    described by ``arch`` (plans.json's architecture entry)."""
    torch.manual_seed(0)
    network = network if network is not None else train_a_few_steps(nnunet_network(arch),
                                                                    axes=(2, 1, 0))
    root = parent / "Dataset900_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (root / "fold_0").mkdir(parents=True)
    plans = {"dataset_name": "Dataset900_Tiny", "plans_name": "nnUNetPlans",
             "original_median_spacing_after_transp": [2.0, 2.0, 2.0],
             "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2],
             "configurations": {"3d_fullres": {
                 "data_identifier": "nnUNetPlans_3d_fullres",
                 "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
                 "patch_size": [32, 32, 32], "median_image_size_in_voxels": [91, 109, 91],
                 "spacing": [2.0, 2.0, 2.0], "normalization_schemes": ["ZScoreNormalization"],
                 "use_mask_for_norm": [False],
                 "resampling_fn_data": "resample_data_or_seg_to_shape",
                 "architecture": arch, "batch_dice": False}},
             "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": {
                 "max": 1.0, "mean": 0.4, "median": 0.4, "min": 0.0, "percentile_00_5": 0.01,
                 "percentile_99_5": 0.95, "std": 0.2}}}
    dataset = {"channel_names": {"0": "T1"},
               "labels": {name: i for i, name in enumerate(CLASSES)},
               "numTraining": 1, "file_ending": ".nii.gz", "name": "Tiny"}
    (root / "plans.json").write_text(json.dumps(plans, indent=4))
    (root / "dataset.json").write_text(json.dumps(dataset, indent=4))
    (root / "postprocessing.pkl").write_bytes(b"not opened by UDA Studio")
    optimiser = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": optimiser.state_dict(),
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.1), np.float64(0.2)],
                    "ema_fg_dice": [np.float64(0.1), np.float64(0.15)],
                    "train_losses": [np.float32(1.2), np.float32(0.9)],
                    "epoch_start_timestamps": [1.0, 2.0]},
        "_best_ema": np.float64(0.15),
        "current_epoch": 2,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                      "dataset_json": dataset, "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    checkpoint.update(extra_checkpoint or {})
    torch.save(checkpoint, root / "fold_0" / "checkpoint_final.pth")
    return root
