"""The benchmark's work that runs in a fresh child process (multiprocessing, spawn).

Each function takes one plain dict (picklable) and returns one plain dict. Running every
adaptation in its own process makes its peak memory its own, and keeps one run's threads,
caches and allocator state from colouring the next run's time.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # children import torch and the engine only inside the jobs
    from uda_core.engine.events import EngineEvent


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (1 MB = 2**20 bytes).

    On Linux VmHWM of /proc/self/status: the peak of this program's own memory since it
    started. getrusage's ru_maxrss is not: Linux carries it over a fork and an exec, so a
    child spawned by a large parent reports the parent's peak (every row of a benchmark
    whose parent had generated the data in-process read the same 1723 MB). Elsewhere
    ru_maxrss (kilobytes on Linux, bytes on macOS); None where the platform has no
    `resource` module (Windows).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 2**10       # kB -> MB
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (2**20 if sys.platform == "darwin" else 2**10)


def _set_threads(job: dict) -> None:
    """torch.set_num_threads(job["threads"]) when given (None: torch's default)."""
    if job.get("threads"):
        import torch
        torch.set_num_threads(int(job["threads"]))


def adapt_job(job: dict) -> dict:
    """One `run_adaptation` from files to files.

    job: model, method (a registry name, no "+std"), targets, out_dir, paired (or None),
    source (or None), reference (target label paths, or None: the scored slices' Dice in
    metrics.jsonl, never used by the run), standardise (bool: match intensities first),
    engine_settings, device, threads. Returns {"summary": run summary, "wall_s": seconds of
    the whole call (read, adapt, write model and masks), "peak_mb": peak resident memory
    (MB)}.
    """
    from uda_core.runs.adapt import run_adaptation

    _set_threads(job)
    started = time.perf_counter()
    summary = run_adaptation(job["model"], job["method"], job["targets"], job["out_dir"],
                             paired=job.get("paired"), source=job.get("source"),
                             reference=job.get("reference"),
                             standardise=bool(job.get("standardise", False)),
                             engine_settings=job["engine_settings"], device=job["device"],
                             overwrite=True)
    wall = time.perf_counter() - started
    return {"summary": summary, "wall_s": wall, "peak_mb": peak_rss_mb()}


def oracle_job(job: dict) -> dict:
    """Fine-tune the source network on labelled target-domain volumes (the oracle).

    job: model, train_pairs, val_pairs (lists of (image, labels) paths), epochs, seed,
    modality, device, threads, out (bundle path to write). The network starts from the model's own
    weights; its early head is left as it is (head_epochs 0). Returns {"path", "wall_s"
    (training seconds), "peak_mb" (MB), "val_dice" (best validation Dice on the model grid),
    "train_slices"}.
    """
    from uda_core.engine.device import resolve_device
    from uda_core.errors import ModelError
    from uda_core.models.bundle import load_model, save_bundle
    from uda_core.runs.train_segmentation import SourceTrainingConfig, train_source_model

    _set_threads(job)
    bundle = load_model(job["model"])
    if bundle.architecture != "unet2d" or not bundle.has_early_head:
        raise ModelError("the oracle fine-tunes a unet2d bundle with an early head; this "
                         "model is not one", job["model"])
    arch = bundle.full_arch_kwargs()
    sx, sy, sz = bundle.spacing_mm  # a loaded bundle has 3 spacings and 2 in-plane sizes
    nx, ny = bundle.in_plane_shape
    config = SourceTrainingConfig(
        class_names=tuple(bundle.class_names), modality=job["modality"],
        spacing_mm=(sx, sy, sz), in_plane_shape=(nx, ny),
        base_channels=arch["base_channels"], depth=arch["depth"], epochs=job["epochs"],
        head_epochs=0, seed=job["seed"], normalisation=dict(bundle.normalisation))
    init_state = bundle.build_network("cpu").state_dict()
    device = resolve_device(job["device"])
    started = time.perf_counter()
    oracle, summary = train_source_model(job["train_pairs"], job["val_pairs"], config, device,
                                         init_state=init_state)
    wall = time.perf_counter() - started
    Path(job["out"]).parent.mkdir(parents=True, exist_ok=True)
    path = save_bundle(oracle, job["out"], overwrite=True)
    return {"path": str(path), "wall_s": wall, "peak_mb": peak_rss_mb(),
            "val_dice": summary["val_dice"], "train_slices": summary["train_slices"]}


def overhead_job(job: dict) -> dict:
    """Steps/s of sfda through the Engine against a bare PyTorch loop, side by side.

    job: model, targets, device, steps (N per timed run), warmup (steps), repeats,
    batch_size, threads, engine_settings (extra EngineConfig fields; {} in the real benchmark). Both
    start each timed run from the model's weights with a new Adam; the engine runs with
    EngineConfig defaults (label-free scoring, checkpoints into a temporary folder, a no-op
    listener). Order: warm-up bare, warm-up engine, then `repeats` times
    (bare, engine). Returns {"bare": [steps/s per repeat], "engine": [...], "steps",
    "batch_size", "score_every", "checkpoint_every"}.
    """
    import numpy as np
    import torch

    from uda_core.engine import Engine, EngineConfig
    from uda_core.engine.device import resolve_device
    from uda_core.losses import kl_class_ratio, weighted_entropy
    from uda_core.methods.sfda import SFDA, SFDAConfig
    from uda_core.models.bundle import load_model
    from uda_core.models.prior import prior_for_positions
    from uda_core.tasks.segmentation import SegmentationTask
    from uda_core.tasks.segmentation_data import load_adaptation_data

    _set_threads(job)
    bundle = load_model(job["model"])
    device = resolve_device(job["device"])
    data = load_adaptation_data(bundle, job["targets"])
    network = bundle.build_network(device)
    initial = {k: v.detach().clone() for k, v in network.state_dict().items()}
    batch_size = int(job["batch_size"])
    sfda = SFDAConfig()

    def autocast():
        if device.type == "cuda":  # the engine's default (amp on) does the same
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def engine_rate(steps: int, seed: int) -> float:
        network.load_state_dict(initial)
        method = SFDA(network, bundle, SFDAConfig(), device)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            settings = EngineConfig(**{**job.get("engine_settings", {}), "steps": steps,
                                       "batch_size": batch_size, "seed": seed})
            engine = Engine(method, SegmentationTask(method, data, settings), settings, Path(tmp),
                            [_ignore])
            engine.run()
            return steps / (time.perf_counter() - started)

    pool = data.training_slices(True)
    c = len(bundle.class_names)
    weights = np.full(c, (1.0 - sfda.background_weight) / max(c - 1, 1))
    weights[0] = sfda.background_weight
    class_weights = torch.tensor(weights, dtype=torch.float32, device=device)

    def bare_rate(steps: int, seed: int) -> float:
        network.load_state_dict(initial)
        network.train()
        for p in network.parameters():
            p.requires_grad_(True)
        optimiser = torch.optim.Adam(network.parameters(), lr=sfda.lr, betas=(0.9, 0.999),
                                     weight_decay=sfda.weight_decay)
        class_ratio_prior = bundle.class_ratio_prior
        assert class_ratio_prior is not None, "sfda needs a model with a class-ratio prior"
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        for _ in range(steps):
            pick = rng.integers(0, len(pool.volume), batch_size)
            where = list(zip(pool.volume[pick], pool.slice[pick], strict=True))
            images = np.stack([data.inputs[v].slices[z] for v, z in where])
            positions = np.array([data.inputs[v].positions[z] for v, z in where], np.float32)
            x = torch.from_numpy(images).unsqueeze(1).to(device)
            prior = torch.from_numpy(prior_for_positions(class_ratio_prior, positions)
                                     .astype(np.float32)).to(device)
            with autocast():
                probs = torch.softmax(network(x).float(), dim=1)
                loss = (sfda.lambda_ent * weighted_entropy(probs, class_weights)
                        + sfda.lambda_kl * kl_class_ratio(probs, prior,
                                                          prior_floor=sfda.prior_floor))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss.item()
        return steps / (time.perf_counter() - started)

    if job["warmup"] > 0:
        bare_rate(job["warmup"], 99)
        engine_rate(job["warmup"], 99)
    bare, engine = [], []
    for repeat in range(job["repeats"]):
        bare.append(bare_rate(job["steps"], repeat))
        engine.append(engine_rate(job["steps"], repeat))
    defaults = EngineConfig(**job.get("engine_settings", {}))
    return {"bare": bare, "engine": engine, "steps": job["steps"], "batch_size": batch_size,
            "score_every": defaults.score_every, "score_slices": defaults.score_slices,
            "checkpoint_every": defaults.checkpoint_every,
            "device": str(device)}


def _ignore(event: EngineEvent) -> None:
    """A listener that does nothing (the engine still builds and emits every event)."""
