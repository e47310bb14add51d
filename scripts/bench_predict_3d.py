"""Benchmark of `uda predict` with an imported 3D network on a 1 mm, 182 x 218 x 182 head.

    PYTHONPATH=. .venv/bin/python scripts/bench_predict_3d.py [--roi 96] [--overlap 0.5]
        [--repeats 1] [--device cpu]

The network is a MONAI bundle folder (written with MONAI's own init_bundle, see
tests/models/real_formats.py) holding a MONAI UNet of a usual size (channels 16-256, 4
stride-2 levels, 2 residual units per level, BatchNorm; 4.8 M parameters) with RANDOM weights:
the run time of a sliding-window pass does not depend on what the weights are, only on the
network and the window. The volume is a demo subject simulated at 1 mm on the MNI 1 mm grid
(scripts/bench_predict.py). Each repeat runs the real command line in a fresh process
(import the bundle, read, resample, sliding window, map back, write) and reports the wall
time and the child's peak resident memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_predict import make_benchmark_volume

from tests.models.real_formats import make_monai_bundle, monai_unet

NET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 4,
       "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2,
       "norm": "batch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roi", type=int, default=96)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "mni1mm.nii.gz"
        make_benchmark_volume(scan)
        network = monai_unet(NET).eval()
        n_params = sum(p.numel() for p in network.parameters())
        folder = make_monai_bundle(Path(tmp) / "bundle", network=network, net_def=NET,
                                   roi=args.roi, overlap=args.overlap, spacing=1.0)
        walls = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "uda_core.cli", "predict", "--model",
                            str(folder), "--device", args.device, "--out",
                            f"{tmp}/out{repeat}", str(scan)], check=True,
                           stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"MONAI UNet ({n_params / 1e6:.1f} M parameters), roi {args.roi}^3, overlap "
          f"{args.overlap}, gaussian, {args.device}")
    print(f"uda predict 182x218x182 @ 1 mm: wall {min(walls):.1f} s best / "
          f"{np.median(walls):.1f} s median of {len(walls)}; peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
