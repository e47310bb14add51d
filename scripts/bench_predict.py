"""Benchmark of `uda predict` on a 1 mm, 182 x 218 x 182 brain volume (the MNI152 1 mm grid).

    .venv/bin/python scripts/bench_predict.py [--model demo:brain-t1] [--repeats 3]

Builds the volume from a demo subject simulated at 1 mm and resampled onto the standard grid,
then runs the real command line (`uda predict`, a fresh process each time: read, resample,
infer, map back, write) and reports wall time and the child's peak resident memory.
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

from uda_core.io import Volume
from uda_core.io.geometry import resample
from uda_core.io.writers import write_volume
from uda_core.synth.domains import make_subject

MNI_1MM_SHAPE = (182, 218, 182)
MNI_1MM_AFFINE = np.array([[1.0, 0, 0, -90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])


def make_benchmark_volume(path: Path) -> None:
    image, _ = make_subject(100, ("t1",), spacing_mm=1.0)["t1"]
    data = resample(image.data, image.affine, MNI_1MM_AFFINE, MNI_1MM_SHAPE, order=1,
                    fill=float(image.data.min()))
    write_volume(Volume(data, MNI_1MM_AFFINE), path, dtype="float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo:brain-t1")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    uda = str(Path(sys.executable).with_name("uda"))
    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "mni1mm.nii.gz"
        make_benchmark_volume(scan)
        walls = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            subprocess.run([uda, "predict", "--model", args.model, "--device", "cpu",
                            "--out", f"{tmp}/out{repeat}", str(scan)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"uda predict 182x218x182 @ 1 mm: wall {min(walls):.2f} s best / "
          f"{np.median(walls):.2f} s median of {len(walls)}; peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
