"""Benchmark of `uda predict` with an imported 3D network on a 1 mm, 182 x 218 x 182 head.

    PYTHONPATH=. .venv/bin/python scripts/bench_predict_3d.py [--roi 96] [--overlap 0.5]
        [--repeats 1] [--device cpu] [--model demo:brain-t1-3d] [--threads 2]

The network is a MONAI bundle folder (written with MONAI's own init_bundle, see
tests/models/real_formats.py) holding a MONAI UNet of a usual size (channels 16-256, 4
stride-2 levels, 2 residual units per level, BatchNorm; 4.8 M parameters) with RANDOM weights:
the run time of a sliding-window pass does not depend on what the weights are, only on the
network and the window. The volume is a demo subject simulated at 1 mm on the MNI 1 mm grid
(scripts/bench_predict.py). Each repeat runs the real command line in a fresh process
(import the bundle, read, resample, sliding window, map back, write) and reports the wall
time, the child's CPU time (user + system) and peak resident memory, and the load average
before and after. With --model the given 3D model (e.g. the shipped demo:brain-t1-3d, on its
own 2 mm grid and window) replaces the random network; --roi and --overlap then apply only
when given.
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--roi", type=int)
    parser.add_argument("--overlap", type=float)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="a 3D model (bundle, built-in name) instead of the "
                                        "random MONAI UNet")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the child")
    args = parser.parse_args()
    args.roi_given, args.overlap_given = args.roi is not None, args.overlap is not None
    args.roi = 96 if args.roi is None else args.roi
    args.overlap = 0.5 if args.overlap is None else args.overlap
    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "mni1mm.nii.gz"
        make_benchmark_volume(scan)
        if args.model:
            model, what = args.model, f"model {args.model}"
            options = [*(["--roi", str(args.roi)] if args.roi_given else []),
                       *(["--overlap", str(args.overlap)] if args.overlap_given else [])]
        else:
            network = monai_unet(NET).eval()
            n_params = sum(p.numel() for p in network.parameters())
            model = str(make_monai_bundle(Path(tmp) / "bundle", network=network, net_def=NET,
                                          roi=args.roi, overlap=args.overlap, spacing=1.0))
            what = (f"MONAI UNet ({n_params / 1e6:.1f} M parameters), roi {args.roi}^3, "
                    f"overlap {args.overlap}, gaussian")
            options = []
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads
                                  else {}))
        walls = []
        load_before = os.getloadavg()
        for repeat in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "uda_core.cli", "predict", "--model",
                            model, "--device", args.device, *options, "--out",
                            f"{tmp}/out{repeat}", str(scan)], check=True,
                           stdout=subprocess.DEVNULL, env=env)
            walls.append(time.perf_counter() - start)
        load_after = os.getloadavg()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (usage.ru_utime + usage.ru_stime) / len(walls)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"{what}, {args.device}, OMP_NUM_THREADS {args.threads or 'unset'}")
    print(f"uda predict 182x218x182 @ 1 mm: wall {min(walls):.1f} s best / "
          f"{np.median(walls):.1f} s median of {len(walls)}; CPU {cpu_s:.1f} s per run; "
          f"peak RSS {peak_mb:.0f} MB; load average (1 min) {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")


if __name__ == "__main__":
    main()
