"""Side-by-side time per 2D pair: network, network + instance optimisation, SimpleITK.

Usage: PYTHONPATH=. python scripts/bench_reg_pair_speed.py MODEL SHIFT N [SETTINGS]

MODEL a registration bundle; SHIFT t2|pd (demo subjects 100-102 as shipped); N pairs (after
one warm-up pair), each registered by every method in turn (interleaved, so a loaded machine
slows all alike); SETTINGS "iterations,lr,smooth[,similarity[,sample_every]];..." of the
instance-optimisation rows (default: the `uda reg apply` default). Prints the median ms per
pair (forward + optimisation + warp, 1 thread) and SimpleITK's time over each.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from uda_core.bench.registration import SitkRegistration
from uda_core.models.bundle.registration import load_registration_model
from uda_core.models.instance_optimisation import InstanceOptimisation, RefinedRegNet
from uda_core.spatial.warp import warp_image
from uda_core.tasks.registration_data import demo_files, pairs_from_slices, slices_from_files


def settings_of(entry: str) -> InstanceOptimisation:
    iterations, lr, weight, *rest = entry.split(",")
    extra: dict = dict(zip(("similarity", "sample_every"), rest, strict=False))
    if "sample_every" in extra:
        extra["sample_every"] = int(extra["sample_every"])
    return InstanceOptimisation(int(iterations), float(lr), float(weight), **extra)


def main() -> None:
    torch.set_num_threads(1)
    model, shift, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    entries = sys.argv[4].split(";") if len(sys.argv) > 4 else []
    bundle, net = load_registration_model(model)
    net.eval()
    slices = slices_from_files(*demo_files(shift, (100, 101, 102)), grid=bundle)
    rng = np.random.default_rng(7)
    pairs = pairs_from_slices(slices, rng.choice(len(slices), n + 1, replace=False), rng,
                              displacement_grid=net.grid, stride=net.stride)
    runners = {"network": net}
    runners.update({f"io {e}": RefinedRegNet(net, settings_of(e)) for e in entries}
                   if entries else {"io (default)": RefinedRegNet(net)})
    sitk = SitkRegistration(net.grid, net.stride, tuple(bundle.spacing_mm[:2]), 100)
    times: dict[str, list[float]] = {k: [] for k in [*runners, "SimpleITK"]}
    for i in range(n + 1):
        fixed, moving = pairs.fixed[i:i + 1], pairs.moving[i:i + 1]
        for name, runner in runners.items():
            start = time.perf_counter()
            with torch.no_grad():
                warp_image(moving, runner(fixed, moving)["disp"])
            if i:
                times[name].append(time.perf_counter() - start)
        if i:
            start = time.perf_counter()
            sitk(fixed, moving)
            times["SimpleITK"].append(time.perf_counter() - start)
    median = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    for name, ms in median.items():
        print(f"{name}: {ms:.1f} ms per pair, SimpleITK / this {median['SimpleITK'] / ms:.1f}x")


if __name__ == "__main__":
    main()
