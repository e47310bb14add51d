#!/usr/bin/env bash
# The GPU path, checked in a few minutes on a machine with a CUDA GPU (issue 15):
#   1. `uda predict` of a 1 mm head (182 x 218 x 182, built from demo subject 100) on CUDA vs
#      the CPU: seconds, and the labels agree;
#   2. a short adaptation (tent, bfloat16 autocast on CUDA) on the demo protocol scans: the
#      engine's steps/s on CUDA vs the CPU;
#   3. GPU memory back to its baseline after a run (torch.cuda.memory_allocated before, after
#      the predict and after the adaptation, with the network and tensors released);
#   4. the registration path (demo:reg-t1 + the MIND instance optimisation, grid_sample's
#      backward kernel) on 8 demo T1/T2 slice pairs: CUDA vs CPU fields agree, milliseconds.
# Prints one "gpu_check: ..." line per result and exits non-zero if a check fails. Without a
# CUDA device it prints "no CUDA device: skipped" and exits 0.
#   scripts/gpu_check.sh [STEPS]      (default 40 adaptation steps per device)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEPS=${1:-40} "$PYTHON" - <<'EOF'
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if not torch.cuda.is_available():
    print("gpu_check: no CUDA device: skipped")
    sys.exit(0)

from uda_core.engine.device import resolve_device
from uda_core.models.bundle import load_model
from uda_core.models.inference import segment_volume
from uda_core.runs.adapt import run_adaptation

steps = int(os.environ["STEPS"])
failures = []
print(f"gpu_check: device {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
torch.cuda.synchronize()
baseline = torch.cuda.memory_allocated()
work = Path(tempfile.mkdtemp(prefix="gpu_check-"))

# 1. predict of a 1 mm head
sys.path.insert(0, "scripts")
from bench_predict import make_benchmark_volume  # noqa: E402

from uda_core.io.readers import read_volume  # noqa: E402

head = work / "head_1mm.nii.gz"
make_benchmark_volume(head)
volume = read_volume(head)
bundle = load_model("demo:brain-t1")
labels = {}
for name in ("cuda", "cpu"):
    device = resolve_device(name)
    network = bundle.build_network(device)
    segment_volume(bundle, network, volume, device)          # warm-up (kernels, allocator)
    if name == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    labels[name] = segment_volume(bundle, network, volume, device).data
    if name == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"gpu_check: predict 1 mm head {volume.shape} on {name}: "
          f"{time.perf_counter() - start:.2f} s"
          + (f", peak GPU memory {peak:.0f} MiB" if name == "cuda" else ""))
    del network
agree = float(np.mean(labels["cuda"] == labels["cpu"]))
print(f"gpu_check: predict labels CUDA vs CPU agree on {100 * agree:.3f} % of voxels")
if agree < 0.999:
    failures.append(f"CUDA and CPU labels agree on only {100 * agree:.3f} % of voxels")
gc.collect()
torch.cuda.empty_cache()
after_predict = torch.cuda.memory_allocated()
print(f"gpu_check: GPU memory after predict {after_predict - baseline} bytes above baseline")
if after_predict > baseline:
    failures.append(f"predict left {after_predict - baseline} bytes allocated on the GPU")

# 2. a short adaptation, bf16 autocast on CUDA, steps/s vs the CPU
targets = sorted(str(p) for p in Path("resources/demo/protocol").glob("sub-*_protocol.nii.gz"))
rates = {}
for name in ("cuda", "cpu"):
    summary = run_adaptation("demo:brain-t1", "tent", targets, work / f"adapt_{name}",
                             device=name, save_masks=False,
                             engine_settings={"steps": steps, "amp": True, "score_every": 0})
    rates[name] = summary["steps_per_second"]
    print(f"gpu_check: adapt tent {steps} steps on {name} (amp={name == 'cuda'}): "
          f"{summary['status']}, {rates[name]:.2f} steps/s")
    if summary["status"] != "completed":
        failures.append(f"adaptation on {name} ended {summary['status']}")
print(f"gpu_check: adapt steps/s CUDA / CPU = {rates['cuda'] / max(rates['cpu'], 1e-9):.1f}")

# 3. memory back to baseline after the run
gc.collect()
torch.cuda.empty_cache()
after_adapt = torch.cuda.memory_allocated()
print(f"gpu_check: GPU memory after adapt {after_adapt - baseline} bytes above baseline")
if after_adapt > baseline:
    failures.append(f"adaptation left {after_adapt - baseline} bytes allocated on the GPU")

# 4. registration: the refined network on 8 slice pairs, CUDA vs the CPU
from uda_core.models.bundle.registration import load_registration_model  # noqa: E402
from uda_core.models.instance_optimisation import RefinedRegNet  # noqa: E402
from uda_core.tasks.registration_data import (  # noqa: E402
    demo_files, pairs_from_slices, slices_from_files)

reg_bundle, reg_net = load_registration_model("demo:reg-t1")
slices = slices_from_files(*demo_files("t2", (100,)), grid=reg_bundle)
rng = np.random.default_rng(0)
pairs = pairs_from_slices(slices, rng.choice(len(slices), 8, replace=False), rng,
                          displacement_grid=reg_net.grid, stride=reg_net.stride)
fields = {}
for name in ("cuda", "cpu"):
    net = reg_net.to(name).eval()
    refined = RefinedRegNet(net)
    fixed, moving = pairs.fixed.to(name), pairs.moving.to(name)
    refined(fixed, moving)                                   # warm-up
    if name == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fields[name] = refined(fixed, moving)["disp_cp"].cpu()
    if name == "cuda":
        torch.cuda.synchronize()
    print(f"gpu_check: register 8 slice pairs on {name}: "
          f"{1000 * (time.perf_counter() - start) / 8:.2f} ms per pair")
gap = float((fields["cuda"] - fields["cpu"]).abs().max())
print(f"gpu_check: registration fields CUDA vs CPU differ by at most {gap:.3f} px")
if gap > 0.5:
    failures.append(f"registration fields differ by {gap:.3f} px between CUDA and CPU")
del reg_net, net, refined, fixed, moving
gc.collect()
torch.cuda.empty_cache()

for failure in failures:
    print(f"gpu_check: FAILED: {failure}")
print("gpu_check: " + ("all checks passed" if not failures else f"{len(failures)} failed"))
sys.exit(1 if failures else 0)
EOF
