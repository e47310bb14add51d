"""`uda reg bench`: registration adapted across modalities, against no adaptation and SimpleITK.

For each shift (the moving modality: "t2", "pd"; the fixed image is always T1):

- data: the demo subjects (default the held-out 100-102 from resources/demo; other subjects
  are generated into the work folder) on the model grid; every ``slice_every``-th head slice
  gives one evaluation pair: T1 fixed, the other modality moving, deformed by a known random
  smooth field (seed ``pair_seed``);
- ``none``: the source model as it is; ``l1`` / ``swd`` / ``pemd``: ``uda reg adapt`` (MCD) on
  the same subjects' slices with fresh random fields (transductive, as in ``uda bench``: the
  true fields of the evaluation pairs are never seen), once per seed, files to files;
  ``sitk``: :func:`~uda_core.spatial.sitk_bspline.register_bspline_2d` on every pair;
  ``io``: the model followed by test-time instance optimisation with the settings
  ``refine`` (default: those of `uda reg apply`), and with it an ``mcd-<d>+io`` row for every
  adapted model (adapted network + optimisation: what `uda reg apply` runs);
- scores (:func:`~uda_core.scores.registration.evaluate_registration`, the same code for all):
  accuracy (share of head control points whose label is the true quantised displacement),
  endpoint error at the head control points (mm), Dice of the warped tissue labels (CSF, GM,
  WM), folding (share of head pixels with Jacobian determinant <= 0); time per pair (one
  pair at a time, ``threads`` CPU threads for torch and 1 for SimpleITK, or the GPU).

Choices (learning rate, steps, num_k, ...) are to be tuned with ``--subjects 40-42``
(validation subjects) only. The Markdown section, its recorded targets and the overlay
picture are made by :mod:`uda_core.bench.registration_report`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from uda_core.models.bundle.registration import load_registration_model
from uda_core.scores.registration import evaluate_registration
from uda_core.spatial.fields import displacement_at_control_points
from uda_core.spatial.warp import quantise, warp_image
from uda_core.tasks.registration_data import (
    RegPairs,
    demo_files,
    pairs_from_slices,
    slices_from_files,
)

REG_SHIFTS = ("t2", "pd")
REG_METHODS = ("none", "io", "l1", "swd", "pemd", "sitk")
# also offered: "io", the model followed by test-time instance optimisation (the default of
# `uda reg apply`; :mod:`uda_core.models.instance_optimisation`)
DEMO_SUBJECTS = (100, 101, 102)   # the subjects shipped in resources/demo
MODALITY = {"t2": "T2w", "pd": "PD/FLAIR-like"}

Log = Callable[[str], None]


@dataclass
class RegBenchConfig:
    """What `uda reg bench` runs (defaults: the full benchmark; 12 MCD runs of ~4 min, two at a
    time, on 2 CPU cores)."""

    shifts: tuple[str, ...] = REG_SHIFTS
    methods: tuple[str, ...] = REG_METHODS
    subjects: tuple[int, ...] = DEMO_SUBJECTS   # scored; 40-42 for tuning
    slice_every: int = 2               # every k-th head slice is an evaluation pair
    pair_seed: int = 1234              # the evaluation pairs' random fields
    steps: int = 300                   # MCD steps per run, as `uda reg adapt` (session 8: the
                                       # width-8 demo:reg-t1 runs 300 steps in ~4 min on one
                                       # core; T2 pemd chose step 225 on validation)
    seeds: tuple[int, ...] = (0, 1)
    method_settings: dict = field(default_factory=dict)   # MCDConfig fields, every run
    engine_settings: dict = field(default_factory=dict)   # EngineConfig fields, every run
    sitk_iterations: int = 100         # per resolution level
    timing_pairs: int = 10             # pairs timed one at a time, after all runs ended
    model: str = "demo:reg-t1"
    refine: dict = field(default_factory=dict)  # InstanceOptimisation fields of "io" rows
    device: str = "auto"
    threads: int = 1                   # torch threads (1: fair against 1-thread SimpleITK)
    workers: int = 2                   # adaptation runs in parallel (spawned processes);
                                       # 1 = in this process, one after another
    work_dir: Path | None = None       # None: a temporary folder, removed afterwards
    quick: bool = False


def quick_reg_config(**changes) -> RegBenchConfig:
    """The tiny version for tests: subject 100, T1->T2, 2 MCD steps, a handful of pairs,
    SimpleITK with 5 iterations per level."""
    values: dict[str, Any] = dict(shifts=("t2",), subjects=(100,), slice_every=12, steps=2,
                  seeds=(0,), workers=1,
                  method_settings={"source_batch": 2, "target_batch": 2, "num_k": 1},
                  engine_settings={"score_slices": 2, "score_every": 0},
                  sitk_iterations=5, timing_pairs=2, quick=True)
    values.update(changes)
    return RegBenchConfig(**values)


@dataclass
class RegRow:
    """One method on one shift: per seed, the scores of evaluate_registration."""

    method: str
    seeds: list[int] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)        # adaptation, files to files
    steps_per_s: list[float] = field(default_factory=list)
    chosen_steps: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)         # the engine's, per seed
    errors: list[str] = field(default_factory=list)

    def mean(self, key: str) -> float:
        values = [s[key] for s in self.scores]
        return float(np.mean(values)) if values else float("nan")

    def std(self, key: str) -> float:
        values = [s[key] for s in self.scores]
        return float(np.std(values)) if len(values) > 1 else float("nan")


@dataclass
class RegBenchResult:
    config: RegBenchConfig
    rows: dict[str, list[RegRow]] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    overlay: dict = field(default_factory=dict)   # images of one T1->shift pair per method
    timing: dict = field(default_factory=dict)    # learned_s, sitk_s: median s per pair
    machine: dict = field(default_factory=dict)
    wall_s: float = 0.0

    def row(self, shift: str, method: str) -> RegRow | None:
        return next((r for r in self.rows.get(shift, []) if r.method == method), None)

    def to_dict(self) -> dict:
        return {"config": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in dataclasses.asdict(self.config).items()},
                "rows": {s: [dataclasses.asdict(r) for r in rows]
                         for s, rows in self.rows.items()},
                "pairs": self.pairs, "timing": self.timing, "machine": self.machine,
                "wall_s": self.wall_s}


# --- the learned and the classical registrations, timed ------------------------------------

class SitkRegistration:
    """SimpleITK B-spline + Mattes MI in the shape evaluate_registration expects of a
    network: ``(fixed, moving) -> {"probs", "disp_cp", "disp"}``; "probs" is the one-hot label
    of the block-mean displacement at each control point. Keeps each pair's seconds."""

    def __init__(self, grid, stride: int, spacing_mm, iterations: int, threads: int = 1):
        self.grid, self.stride = grid, stride
        self.spacing_mm, self.iterations = tuple(spacing_mm), iterations
        self.threads = int(threads)
        self.seconds: list[float] = []

    def eval(self) -> SitkRegistration:
        return self

    def __call__(self, fixed: torch.Tensor, moving: torch.Tensor) -> dict[str, torch.Tensor]:
        from uda_core.spatial.sitk_bspline import register_bspline_2d
        fields = []
        for f, m in zip(fixed.cpu().numpy(), moving.cpu().numpy(), strict=True):
            _, disp, seconds = register_bspline_2d(f[0], m[0], spacing=self.spacing_mm,
                                                   iterations=self.iterations,
                                                   threads=self.threads)
            fields.append(disp)
            self.seconds.append(seconds)
        dense = torch.from_numpy(np.stack(fields))
        disp_cp = displacement_at_control_points(dense, self.stride)
        labels = quantise(disp_cp, self.grid)
        probs = F.one_hot(labels, self.grid.n_labels).permute(0, 3, 1, 2).float()
        return {"probs": probs, "disp_cp": disp_cp, "disp": dense}


@torch.no_grad()
def learned_seconds_per_pair(network, pairs: RegPairs, device, n: int) -> float:
    """Median wall time (s) of one pair: network forward + warping the moving image, over
    pairs 1..n (pair 0 warms up)."""
    network.eval()
    times = []
    for i in range(min(n + 1, len(pairs))):
        fixed = pairs.fixed[i:i + 1].to(device)
        moving = pairs.moving[i:i + 1].to(device)
        start = time.perf_counter()
        warp_image(moving, network(fixed, moving)["disp"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    return float(np.median(times))


# --- running -------------------------------------------------------------------------------

def _data_root(config: RegBenchConfig, work: Path, log: Log) -> Path | None:
    """resources/demo for the shipped subjects; otherwise generate them into work/demo."""
    if set(config.subjects) <= set(DEMO_SUBJECTS):
        return None
    root = work / "demo"
    wanted = demo_files(config.shifts[0], config.subjects, root)[0]
    if not all(p.exists() for p in wanted):
        from uda_core.synth.demo_data import write_demo_data
        log(f"generating demo subjects {list(config.subjects)} into {root}")
        # brains only: demo:reg-t1 was trained on skull-stripped pairs (resources/demo/brains)
        write_demo_data(root, subjects=config.subjects, domains=("t1", *config.shifts),
                        progress=False, heads=False)
    return root


def adapt_job(job: dict) -> dict:
    """One `uda reg adapt` run (files to files), in this or a spawned process. job: model,
    out, discrepancy, files (fixed, moving, labels), method/engine settings, device,
    threads. Returns {"path", "summary"} or {"error"}."""
    from uda_core.runs.adapt_registration import run_reg_adaptation
    torch.set_num_threads(int(job["threads"]))
    fixed, moving, labels = job["files"]
    try:
        summary = run_reg_adaptation(
            job["model"], job["out"], discrepancy=job["discrepancy"], fixed=fixed,
            moving=moving, labels=labels, aligned=True, method_settings=job["method_settings"],
            engine_settings=job["engine_settings"], device=job["device"], overwrite=True)
    except Exception as exc:  # noqa: BLE001 - reported in the table, the bench goes on
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"path": str(Path(job["out"]) / "adapted.pt"), "summary": summary}


def _adapt_jobs(config: RegBenchConfig, work: Path, root: Path | None) -> dict:
    """{(shift, discrepancy, seed): job} for every adaptation run of the benchmark."""
    jobs = {}
    for shift in config.shifts:
        files = demo_files(shift, config.subjects, root)
        for method in config.methods:
            if method not in ("l1", "swd", "pemd"):
                continue
            for seed in config.seeds:
                jobs[(shift, method, seed)] = {
                    "model": config.model, "out": str(work / f"{shift}-{method}-seed{seed}"),
                    "discrepancy": method, "files": [[str(p) for p in f] for f in files],
                    "method_settings": dict(config.method_settings),
                    "engine_settings": {**config.engine_settings, "steps": config.steps,
                                        "seed": seed},
                    "device": config.device, "threads": config.threads}
    return jobs


def _overlay_images(method_out: dict, pair: RegPairs) -> dict:
    """The fixed image and the moving image warped by method_out["disp"] (numpy (H, W))."""
    warped = warp_image(pair.moving, method_out["disp"].to(pair.moving.dtype))
    return {"fixed": pair.fixed[0, 0].numpy(), "warped": warped[0, 0].numpy()}


def run_reg_benchmark(config: RegBenchConfig, log: Log = print) -> RegBenchResult:
    """Run the benchmark (see the module doc); never raises for one failed run (the row
    records the error)."""
    from uda_core.engine.device import resolve_device
    torch.set_num_threads(int(config.threads))
    started = time.perf_counter()
    device = resolve_device(config.device)
    bundle, network = load_registration_model(config.model, device)
    result = RegBenchResult(config)
    result.machine = {"platform": platform.platform(), "processor": platform.processor()
                      or platform.machine(), "cpus": os.cpu_count(),
                      "torch": torch.__version__, "device": str(device),
                      "threads": config.threads}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(config.work_dir) if config.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root = _data_root(config, work, log)
        jobs = _adapt_jobs(config, work, root)
        with _pool(config.workers if jobs else 1) as pool:
            runs = {key: (pool.submit(adapt_job, job) if pool else job)
                    for key, job in jobs.items()}
            _run_shifts(config, result, network, bundle, runs, root, device, log)
        if "sitk" in config.methods and "none" in config.methods:
            result.timing = _timing(config, network, bundle, root, device)
            log(f"time per pair: learned {result.timing['learned_s'] * 1000:.1f} ms, "
                f"SimpleITK {result.timing['sitk_s'] * 1000:.0f} ms")
    result.wall_s = time.perf_counter() - started
    return result


def _pool(workers: int):
    """A spawn-based process pool for the adaptation runs, or a null context (None)."""
    import contextlib
    if workers <= 1:
        return contextlib.nullcontext(None)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def _run_shifts(config, result, network, bundle, runs, root, device, log) -> None:
    """Fill result.rows and result.overlay shift by shift (adaptation runs: `runs`, futures
    or jobs to run here)."""
    spacing = tuple(bundle.spacing_mm[:2])
    for shift in config.shifts:
        slices = slices_from_files(*demo_files(shift, config.subjects, root), grid=bundle)
        index = np.arange(0, len(slices), config.slice_every)
        pairs = pairs_from_slices(slices, index, np.random.default_rng(config.pair_seed),
                                  displacement_grid=network.grid, stride=network.stride)
        result.pairs[shift] = len(pairs)
        log(f"{shift}: {len(pairs)} evaluation pairs from {len(slices)} slices")
        middle = len(pairs) // 2
        one = pairs.subset(slice(middle, middle + 1))
        overlay = {"before": _overlay_images({"disp": torch.zeros_like(one.disp)}, one)}
        result.rows[shift] = [row for method in config.methods
                              for row in _run_method(config, method, shift, network, pairs,
                                                     runs, device, spacing, overlay, one, log)]
        result.overlay[shift] = overlay


def _timing(config, network, bundle, root, device) -> dict:
    """Median seconds per pair of the learned registration and of SimpleITK, measured one
    pair at a time after every other part of the benchmark has finished (first shift)."""
    shift = config.shifts[0]
    slices = slices_from_files(*demo_files(shift, config.subjects, root), grid=bundle)
    rng = np.random.default_rng(config.pair_seed + 1)
    index = rng.choice(len(slices), min(config.timing_pairs + 1, len(slices)), replace=False)
    pairs = pairs_from_slices(slices, index, rng, displacement_grid=network.grid,
                              stride=network.stride)
    learned = learned_seconds_per_pair(network, pairs, device, config.timing_pairs)
    refined = (learned_seconds_per_pair(_refined(network, config), pairs, device,
                                        config.timing_pairs)
               if "io" in config.methods else None)
    with torch.no_grad():  # throughput: all timed pairs in one batch
        start = time.perf_counter()
        fixed, moving = pairs.fixed[1:].to(device), pairs.moving[1:].to(device)
        warp_image(moving, network(fixed, moving)["disp"])
        batched = (time.perf_counter() - start) / max(len(pairs) - 1, 1)
    sitk = SitkRegistration(network.grid, network.stride, tuple(bundle.spacing_mm[:2]),
                            config.sitk_iterations)
    sitk(pairs.fixed[1:], pairs.moving[1:])
    return {"shift": shift, "pairs": len(pairs) - 1, "learned_s": learned,
            "learned_io_s": refined,
            "learned_batched_s": batched, "sitk_s": float(np.median(sitk.seconds))}


def _refined(network, config: RegBenchConfig):
    from uda_core.models.instance_optimisation import InstanceOptimisation, RefinedRegNet
    return RefinedRegNet(network, InstanceOptimisation(**config.refine))


def _evaluate(net, pairs, spacing, device) -> dict:
    return evaluate_registration(net, pairs, spacing_mm=spacing, device=device)


def _run_method(config, method, shift, network, pairs, runs, device, spacing, overlay,
                one: RegPairs, log) -> list[RegRow]:
    """The method's row: evaluate it on `pairs`, time it, and add its warp of the pair `one`
    to `overlay`; for an MCD method with "io" among the methods, also the row of each adapted
    model followed by the instance optimisation ("mcd-pemd+io": what `uda reg apply` runs)."""
    refined_row = None
    if method == "none":
        row = RegRow("none", seeds=[0], scores=[_evaluate(network, pairs, spacing, device)])
        with torch.no_grad():
            overlay["none"] = _overlay_images(
                {"disp": network(one.fixed.to(device), one.moving.to(device))["disp"].cpu()},
                one)
    elif method == "io":
        refined = _refined(network, config)
        row = RegRow("io", seeds=[0], scores=[_evaluate(refined, pairs, spacing, device)])
        overlay["io"] = _overlay_images(
            {"disp": refined(one.fixed.to(device), one.moving.to(device))["disp"].cpu()}, one)
    elif method == "sitk":
        sitk = SitkRegistration(network.grid, network.stride, spacing, config.sitk_iterations)
        row = RegRow("SimpleITK", seeds=[0], scores=[_evaluate(sitk, pairs, spacing, "cpu")])
        overlay["sitk"] = _overlay_images(sitk(one.fixed, one.moving), one)
    else:
        row = RegRow(f"mcd-{method}")
        for seed in config.seeds:
            run = runs[(shift, method, seed)]
            try:
                done = run.result() if hasattr(run, "result") else adapt_job(run)
            except Exception as exc:  # noqa: BLE001 - e.g. a child process killed
                done = {"error": f"{type(exc).__name__}: {exc}"}
            if "error" in done:
                row.errors.append(f"seed {seed}: {done['error']}")
                log(f"{shift} mcd-{method} seed {seed} failed: {done['error']}")
                continue
            summary = done["summary"]
            _, adapted = load_registration_model(done["path"], device)
            row.seeds.append(seed)
            row.scores.append(_evaluate(adapted, pairs, spacing, device))
            row.wall_s.append(summary["seconds"])
            row.steps_per_s.append(summary["steps_per_second"])
            row.chosen_steps.append(summary["chosen_step"])
            row.statuses.append(summary["status"])
            if "io" in config.methods:
                refined_row = refined_row or RegRow(f"mcd-{method}+io")
                refined_row.seeds.append(seed)
                refined_row.scores.append(_evaluate(_refined(adapted, config), pairs, spacing,
                                                    device))
            if seed == config.seeds[0]:
                with torch.no_grad():
                    out = adapted(one.fixed.to(device), one.moving.to(device))
                overlay[method] = _overlay_images({"disp": out["disp"].cpu()}, one)
                if refined_row:
                    out = _refined(adapted, config)(one.fixed.to(device), one.moving.to(device))
                    overlay[f"{method}+io"] = _overlay_images({"disp": out["disp"].cpu()}, one)
    rows = [row] + ([refined_row] if refined_row else [])
    for done_row in rows:
        log(f"{shift} {done_row.method}: accuracy {done_row.mean('accuracy'):.3f}, EPE "
            f"{done_row.mean('epe_mm'):.2f} mm, Dice {done_row.mean('dice_after'):.3f}")
    return rows
