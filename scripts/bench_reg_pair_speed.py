"""Side-by-side time per 2D pair: network, network + instance optimisation, SimpleITK.

Usage: PYTHONPATH=. python scripts/bench_reg_pair_speed.py MODEL SHIFT N [SETTINGS]
       [--threads T] [--repeats R] [--batch B]

MODEL a registration bundle; SHIFT t2|pd (demo subjects 100-102 as shipped); N pairs (after
one warm-up pair), each registered by every method in turn (interleaved, so a loaded machine
slows all alike), R rounds over the N pairs; SETTINGS "iterations,lr,smooth[,similarity[,
sample_every]];..." of the instance-optimisation rows (default: the `uda reg apply`
default). T threads for torch and for SimpleITK alike (default 1). B > 1: the learned rows
register B pairs in one call (`uda reg apply` sends 8 slices per batch) and report the call's
time / B, per pair; SimpleITK stays one pair at a time. Prints the median wall ms
per pair (forward + optimisation + warp), the median process CPU ms, SimpleITK's time over
each, and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import os
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("shift", choices=("t2", "pd"))
    parser.add_argument("n", type=int)
    parser.add_argument("settings", nargs="?", default="")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle, net = load_registration_model(args.model)
    net.eval()
    slices = slices_from_files(*demo_files(args.shift, (100, 101, 102)), grid=bundle)
    rng = np.random.default_rng(7)
    batch = max(1, args.batch)
    pairs = pairs_from_slices(slices, rng.choice(len(slices), (args.n + 1) * batch,
                                                 replace=(args.n + 1) * batch > len(slices)),
                              rng, displacement_grid=net.grid, stride=net.stride)
    entries = [e for e in args.settings.split(";") if e]
    runners = {"network": net}
    runners.update({f"io {e}": RefinedRegNet(net, settings_of(e)) for e in entries}
                   if entries else {"io (default)": RefinedRegNet(net)})
    sitk = SitkRegistration(net.grid, net.stride, tuple(bundle.spacing_mm[:2]), 100,
                            threads=args.threads)
    methods = [*runners, "SimpleITK"]
    wall: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    load_before = os.getloadavg()[0]
    for round_ in range(args.repeats):
        for i in range(args.n + 1):
            fixed, moving = (pairs.fixed[i * batch:(i + 1) * batch],
                             pairs.moving[i * batch:(i + 1) * batch])
            for name in methods:
                start, start_cpu = time.perf_counter(), time.process_time()
                if name == "SimpleITK":
                    sitk(fixed[:1], moving[:1])
                    count = 1
                else:
                    with torch.no_grad():
                        warp_image(moving, runners[name](fixed, moving)["disp"])
                    count = batch
                if i or round_:            # the first pair warms up
                    wall[name].append((time.perf_counter() - start) / count)
                    cpu[name].append((time.process_time() - start_cpu) / count)
    print(f"threads {args.threads}, batch {batch}, {len(wall['SimpleITK'])} pairs, load average "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    median = {k: 1000 * float(np.median(v)) for k, v in wall.items()}
    median_cpu = {k: 1000 * float(np.median(v)) for k, v in cpu.items()}
    for name in methods:
        print(f"{name}: {median[name]:.1f} ms per pair (CPU {median_cpu[name]:.1f} ms), "
              f"SimpleITK / this {median['SimpleITK'] / median[name]:.1f}x "
              f"(CPU {median_cpu['SimpleITK'] / median_cpu[name]:.1f}x)")


if __name__ == "__main__":
    main()
