"""Running the segmentation benchmark: demo data, source-only, adaptations, oracle, overhead.

Subjects (all simulated by `write_demo_data` into one work folder):
    targets     held-out subjects 100-105 of each shift: adapted on, then scored ("adapt on
                your scans, score those scans"); never used to choose anything (their labels
                go to each run as `reference`, for the scored-slices Dice in metrics.jsonl,
                which only the report reads)
    source      labelled t1 subjects 0-5 (adaptsegnet; ddm only when asked)
    oracle      the shift's labelled subjects 0-11 train it, 12-13 choose its best epoch
    pairs       ddm: the t1 image of each target subject (voxel-aligned with t2/pd by
                construction of the generator)
Every adaptation runs in a fresh spawned process; the parent scores the written masks.

Method names may end in "+std" ("adabn+std": adabn on intensity-standardised targets); the
standardising rows run only on the shifts of the source's weighting (T1W_SHIFTS).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uda_core.bench import children
from uda_core.errors import UdaError

BENCH_SHIFTS = ("protocol", "mprage", "highfield", "t2", "pd")
BENCH_METHODS = ("standardise", "adabn", "adabn+std", "tent", "sfda", "sfda+std", "selftrain",
                 "selftrain+std", "guided", "guided+std", "blend", "blend+std", "early",
                 "adaptsegnet", "ddm")
SOURCE_DOMAIN = "t1"
MODALITY = {"protocol": "T1w", "mprage": "T1w", "highfield": "T1w", "t2": "T2w",
            "pd": "FLAIR"}
T1W_SHIFTS = ("protocol", "mprage", "highfield")   # the source's (t1) weighting
STD_SUFFIX = "+std"        # "<method>+std": the method on intensity-standardised targets
#: Base methods that need neither paired source images nor labelled source data.
SOURCE_FREE = ("standardise", "adabn", "tent", "sfda", "selftrain", "guided", "blend",
               "early")
STD_NOTE = ("intensity standardisation matches histograms of the same weighting only; "
            "skipped on t2/pd")
SKIP_NOTE = "left out to save time"


def split_method(name: str) -> tuple[str, bool]:
    """A benchmark method name as (base method, standardise the targets first?):
    "adabn+std" -> ("adabn", True), "tent" -> ("tent", False)."""
    if name.endswith(STD_SUFFIX):
        return name[:-len(STD_SUFFIX)], True
    return name, False


def standardises(name: str) -> bool:
    """True when the row standardises intensities ("standardise" itself or any "+std")."""
    base, std = split_method(name)
    return std or base == "standardise"


def is_source_free(name: str) -> bool:
    """True when the row's base method needs neither pairs nor labelled source data."""
    return split_method(name)[0] in SOURCE_FREE

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class BenchConfig:
    """What the benchmark runs. Subject numbers index the demo generator's anatomies."""

    shifts: tuple[str, ...] = BENCH_SHIFTS
    methods: tuple[str, ...] = BENCH_METHODS   # those that do not apply to a shift are skipped
    targets: tuple[int, ...] = (100, 101, 102, 103, 104, 105)
    # (shift: methods not run there); the two slow ones that need source data or an early
    # head add little on the extra T1w shifts, whose question is standardisation
    skip: dict[str, tuple[str, ...]] = field(default_factory=lambda: {
        "mprage": ("early", "adaptsegnet"), "highfield": ("early", "adaptsegnet")})
    source_subjects: tuple[int, ...] = tuple(range(0, 6))
    oracle_train: tuple[int, ...] = tuple(range(0, 12))
    oracle_val: tuple[int, ...] = (12, 13)
    oracle_epochs: int = 6
    spacing_mm: float = 2.0            # voxel size of the generated volumes (mm)
    data_seed: int = 0
    steps: int | None = None           # None: each method's default number of updates
    seeds: tuple[int, ...] = (0,)
    engine_settings: dict = field(default_factory=dict)  # extra EngineConfig fields, all runs
    multi_seed: dict = field(default_factory=lambda: {"t2": ("ddm", "adaptsegnet")})
    multi_seeds: tuple[int, ...] = (0, 1, 2)
    ddm_with_source: bool = False      # give ddm the labelled source too (anchor on labels)
    overhead_steps: int = 300          # sfda steps per timed run (the default run length, so
                                       # fixed costs weigh as in real use); 0 = skip; on the
                                       # first 3 targets (the "3 volumes" of the claims)
    # the timed default run: this method, its default steps and engine settings, on the first
    # 3 targets of the first T1w shift, no reference labels (as a user runs it); None: skip.
    # sfda: the source-free method the docs name first (change it with the recommendation)
    default_method: str | None = "sfda"
    overhead_warmup: int = 5
    overhead_repeats: int = 1
    batch_size: int = 16               # slices per update (overhead measurement)
    model: str = "demo:brain-t1"
    device: str = "auto"
    threads: int | None = None         # torch threads in every process; None: torch's default
    work_dir: Path | None = None       # None: a temporary folder, removed afterwards
    reuse: bool = False                # reuse finished runs recorded in work_dir (same job)
    quick: bool = False

    def seeds_for(self, shift: str, method: str) -> tuple[int, ...]:
        return self.multi_seeds if method in self.multi_seed.get(shift, ()) else self.seeds


def quick_config(**changes: Any) -> BenchConfig:
    """The tiny version for tests (under a minute on 2 idle CPU cores): protocol only, adabn
    and adabn+std (the "+std" path end to end), one 4 mm target, 3 steps scored on 4 slices,
    a 1-epoch oracle on one subject, 2 timed overhead steps, no timed default run, 1 torch
    thread per process (robust on a busy machine: oversubscribed torch threads slow down
    several-fold)."""
    values: dict[str, Any] = dict(
        shifts=("protocol",), methods=("adabn", "adabn+std"), targets=(100,),
        source_subjects=(0,), skip={}, oracle_train=(0,), oracle_val=(1,), oracle_epochs=1,
        spacing_mm=4.0, steps=3, multi_seed={}, engine_settings={"score_slices": 4},
        overhead_steps=2, overhead_warmup=1, overhead_repeats=1, default_method=None,
        threads=1, quick=True)
    values.update(changes)
    return BenchConfig(**values)


@dataclass
class Scores:
    """Mean Dice (CSF, GM, WM) and mean HD95 (mm) over the target volumes; `partial` is True
    when some class is absent from a prediction (its HD95 is undefined and left out)."""

    dice: float
    hd95: float
    partial: bool = False


@dataclass
class MethodResult:
    """One method on one shift: per seed, its scores and costs."""

    method: str
    seeds: list[int] = field(default_factory=list)
    scores: list[Scores] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)       # whole run, files to files (s)
    steps_per_s: list[float] = field(default_factory=list)  # engine steps per second
    peak_mb: list[float | None] = field(default_factory=list)  # MB = 2**20 bytes
    steps: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    chosen_steps: list[int] = field(default_factory=list)   # step the label-free score chose
    last_dice: list[float] = field(default_factory=list)    # Dice of the last step's weights
    # reference Dice on the engine's scored slices (metrics.jsonl; evaluation only, NaN when
    # not recorded): of the chosen step, of step 0, and the best over all scorings
    choice_dice: list[float] = field(default_factory=list)
    step0_dice: list[float] = field(default_factory=list)
    hindsight_dice: list[float] = field(default_factory=list)
    kept_source: list[bool] = field(default_factory=list)   # the engine kept step 0's weights
    outcomes: list[str] = field(default_factory=list)       # the engine's one-line outcome

    @property
    def dice(self) -> float:
        return float(np.mean([s.dice for s in self.scores])) if self.scores else float("nan")

    @property
    def dice_std(self) -> float:
        """Sample standard deviation (ddof 1) of the final Dice over seeds; NaN for one."""
        values = [s.dice for s in self.scores]
        return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")

    @property
    def hd95(self) -> float:
        return float(np.mean([s.hd95 for s in self.scores])) if self.scores else float("nan")


@dataclass
class OracleResult:
    scores: Scores
    wall_s: float           # training time (s)
    peak_mb: float | None   # MB
    val_dice: float         # best validation Dice (model grid) that chose its epoch
    epochs: int


@dataclass
class ShiftResult:
    shift: str
    source_only: Scores
    oracle: OracleResult | None
    methods: list[MethodResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def gap_closed(self, dice: float) -> float:
        """(dice - source-only) / (oracle - source-only); NaN without an oracle that beats
        source-only by at least 0.01."""
        if self.oracle is None:
            return float("nan")
        gap = self.oracle.scores.dice - self.source_only.dice
        return (dice - self.source_only.dice) / gap if gap >= 0.01 else float("nan")


@dataclass
class BenchResult:
    config: BenchConfig
    shifts: dict[str, ShiftResult]
    overhead: dict | None
    machine: dict
    total_s: float
    # the timed default run: {"method", "shift", "volumes", "steps", "wall_s"} or
    # {"method", "shift", "error"}; None when not run
    default_run: dict | None = None


def machine_info(device: str) -> dict:
    """Platform, CPU model and count, Python and torch versions, device and date."""
    import datetime as _dt

    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="minutes")}


# --- data ------------------------------------------------------------------------------------

def _image(data_dir: Path, domain: str, subject: int) -> Path:
    return data_dir / domain / f"sub-{subject:03d}_{domain}.nii.gz"


def _labels(data_dir: Path, domain: str, subject: int) -> Path:
    return data_dir / domain / f"sub-{subject:03d}_labels.nii.gz"


def ensure_demo_data(config: BenchConfig, data_dir: Path, log: Log) -> None:
    """Generate every subject and domain the benchmark needs into `data_dir`, unless a
    previous run left exactly those files there (same spacing and seed)."""
    import json

    from uda_core.synth.demo_data import write_demo_data
    subjects = sorted({*config.targets, *config.source_subjects, *config.oracle_train,
                       *config.oracle_val})
    domains = (SOURCE_DOMAIN, *[s for s in config.shifts if s != SOURCE_DOMAIN])
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        old = json.loads(manifest.read_text(encoding="utf-8"))
        if (old.get("spacing_mm") == config.spacing_mm and old.get("seed") == config.data_seed
                and all(_image(data_dir, d, s).is_file() and _labels(data_dir, d, s).is_file()
                        for d in domains for s in subjects)):
            log(f"demo data: reusing {data_dir}")
            return
    log(f"demo data: {len(subjects)} subjects x {len(domains)} domains at "
        f"{config.spacing_mm:g} mm -> {data_dir}")
    started = time.perf_counter()
    write_demo_data(data_dir, subjects=subjects, domains=domains, spacing_mm=config.spacing_mm,
                    seed=config.data_seed, progress=False)
    log(f"demo data: {time.perf_counter() - started:.0f} s")


# --- scoring ---------------------------------------------------------------------------------

def score_label_maps(predictions, references, class_names) -> Scores:
    """Mean over volumes of segmentation_scores' mean Dice and mean HD95 (mm).

    predictions / references: sequences of label Volumes on the same grids, pairwise.
    """
    from uda_core.scores.segmentation import segmentation_scores
    dice, hd95, partial = [], [], False
    for pred, ref in zip(predictions, references, strict=True):
        if pred.shape != ref.shape:
            raise UdaError(f"a mask of shape {pred.shape} does not match its labels "
                           f"{ref.shape}")
        result = segmentation_scores(pred.data, ref.data, class_names, ref.spacing)
        dice.append(result["mean_dice"])
        hd95.append(result["mean_hd95_mm"])
        partial |= any(not np.isfinite(v["hd95_mm"]) for v in result["per_class"].values())
    return Scores(float(np.mean(dice)), float(np.nanmean(hd95)) if np.isfinite(hd95).any()
                  else float("nan"), partial)


def _segment_and_score(bundle, device, targets, labels, network=None,
                       prepare_with=None) -> Scores:
    """Segment each target with the bundle (or `network` with its settings) and score.
    prepare_with: the network a standardised bundle finds each brain with (None: the one
    that segments); runs find it with the source network (tasks.segmentation_data)."""
    from uda_core.io.readers import read_labels, read_volume
    from uda_core.models.brain_region import extracts_brain
    from uda_core.models.inference import prepare_for_bundle, segment_prepared
    network = bundle.build_network(device) if network is None else network
    predictions = []
    for target in targets:
        volume = read_volume(target)
        prepared = prepare_for_bundle(bundle, volume, prepare_with or network, device)
        predictions.append(segment_prepared(network, prepared, volume, device,
                                            brain=extracts_brain(bundle)))
    return score_label_maps(predictions, [read_labels(p) for p in labels], bundle.class_names)


def _last_step_dice(bundle, device, run_dir: Path, targets, labels) -> float:
    """Mean Dice of the weights at the run's last step (checkpoints/last.pt) instead of the
    chosen ones: a diagnosis of the label-free choice, never used to choose anything. NaN
    when the run left no last checkpoint. A standardised `bundle` standardises each target
    as the run did (its brain found by the source network)."""
    from uda_core.engine.checkpoints import load_checkpoint
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        return float("nan")
    state = load_checkpoint(path)["network"]
    network = bundle.build_network(device)
    if set(state) != set(network.state_dict()):   # a wrapped network (blend): the adapted
        from uda_core.models.bundle import load_model  # bundle records its architecture
        network = load_model(run_dir / "adapted.pt").build_network(device)
    network.load_state_dict(state)
    source = bundle.build_network(device) if bundle.normalisation.get("match_quantiles") \
        else None
    return _segment_and_score(bundle, device, targets, labels, network, source).dice


def reference_dice(metrics_path: Path, chosen_step: int) -> tuple[float, float, float]:
    """(choice, step 0, best in hindsight): the "reference/dice" of a run's metrics.jsonl
    (Dice against the target labels on the engine's scored slices, evaluation only) at the
    chosen step, at step 0, and the maximum over all scorings. NaN for what the file does not
    record (no file, no reference, the step not scored). A step scored twice (a resumed run
    appends) counts with its last row."""
    by_step: dict[int, float] = {}
    if metrics_path.is_file():
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            value = row.get("reference/dice")
            if isinstance(value, (int, float)) and "step" in row:
                by_step[int(row["step"])] = float(value)
    finite = [v for v in by_step.values() if np.isfinite(v)]
    nan = float("nan")
    return (by_step.get(int(chosen_step), nan), by_step.get(0, nan),
            max(finite) if finite else nan)


def _score_files(masks, labels, class_names) -> Scores:
    from uda_core.io.readers import read_labels
    return score_label_maps([read_labels(m) for m in masks], [read_labels(p) for p in labels],
                            class_names)


# --- child processes -------------------------------------------------------------------------

def in_child(func, job: dict) -> dict:
    """func(job) in a fresh spawned process (one worker, one task); its result or its error."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(func, job).result()


def recorded_child(func, job: dict, record: Path, reuse: bool, log: Log,
                   fresh_dir: Path | None = None) -> dict:
    """in_child(func, job), its result recorded in `record` (JSON); with `reuse`, a record of
    the same job (same settings and files) is returned instead of running it again.
    `fresh_dir` (the run's output folder) is emptied before a run, so nothing of an earlier
    or interrupted run mixes in."""
    from uda_core.exports.json_file import write_json_atomic
    key = json.loads(json.dumps(job, default=str))
    if reuse and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("job") == key:
            log(f"reusing {record}")
            return saved["result"]
    if fresh_dir is not None:
        shutil.rmtree(fresh_dir, ignore_errors=True)
    result = in_child(func, job)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, {"job": key, "result": result})
    return result


# --- one shift -------------------------------------------------------------------------------

def applicable_methods(config: BenchConfig, shift: str, bundle) -> tuple[list[str], list[str]]:
    """(methods to run on `shift`, notes on the ones left out and why).

    Left out, in this order: those in config.skip[shift] (one note), the standardising ones
    off T1W_SHIFTS (one note), ddm without voxel-aligned pairs, and any whose base method (or,
    for "+std", the standardisation) lacks what it needs."""
    from uda_core.methods.base import PAIRED_SOURCE, SOURCE_LABELLED, TARGET
    from uda_core.methods.registry import METHODS, missing_needs
    from uda_core.synth.domains import resolve_domain
    paired = resolve_domain(shift).orientation == resolve_domain(SOURCE_DOMAIN).orientation
    provided = {TARGET, SOURCE_LABELLED} | ({PAIRED_SOURCE} if paired else set())
    run, notes, skipped, unstandardisable = [], [], [], []
    for name in config.methods:
        base, std = split_method(name)
        if name in config.skip.get(shift, ()):
            skipped.append(name)
            continue
        if standardises(name) and shift not in T1W_SHIFTS:
            unstandardisable.append(name)
            continue
        if base == "ddm" and not paired:
            notes.append(f"{name} skipped on {shift}: its images are stored on another voxel "
                         f"grid than {SOURCE_DOMAIN} (pairs would need registration, "
                         "`--align register`); left out to save time")
            continue
        missing = missing_needs(METHODS[base], bundle, provided)
        if std:
            missing += [m for m in missing_needs(METHODS["standardise"], bundle, provided)
                        if m not in missing]
        if missing:
            notes.append(f"{name} skipped on {shift}: needs " + "; ".join(missing))
            continue
        run.append(name)
    if unstandardisable:
        notes.insert(0, f"{', '.join(unstandardisable)} skipped on {shift}: {STD_NOTE}")
    if skipped:
        notes.insert(0, f"{', '.join(skipped)} skipped on {shift}: {SKIP_NOTE}")
    return run, notes


def run_shift(config: BenchConfig, shift: str, bundle, device, data_dir: Path,
              work: Path, log: Log) -> ShiftResult:
    """Source-only, oracle and every applicable method (and seed) on one shift."""
    targets = [_image(data_dir, shift, s) for s in config.targets]
    labels = [_labels(data_dir, shift, s) for s in config.targets]
    names = bundle.class_names
    source_only = _segment_and_score(bundle, device, targets, labels)
    log(f"[{shift}] source only: Dice {source_only.dice:.3f}, HD95 {source_only.hd95:.2f} mm")
    result = ShiftResult(shift, source_only, None)

    oracle_job = {
        "model": config.model, "epochs": config.oracle_epochs, "seed": 0,
        "modality": MODALITY.get(shift, shift), "device": config.device,
        "threads": config.threads,
        "out": str(work / "oracle" / f"{shift}.pt"),
        "train_pairs": [(_image(data_dir, shift, s), _labels(data_dir, shift, s))
                        for s in config.oracle_train],
        "val_pairs": [(_image(data_dir, shift, s), _labels(data_dir, shift, s))
                      for s in config.oracle_val]}
    try:
        from uda_core.models.bundle import load_model
        done = recorded_child(children.oracle_job, oracle_job,
                              work / "oracle" / f"{shift}.json", config.reuse, log)
        scores = _segment_and_score(load_model(done["path"]), device, targets, labels)
        result.oracle = OracleResult(scores, done["wall_s"], done["peak_mb"], done["val_dice"],
                                     config.oracle_epochs)
        log(f"[{shift}] oracle: Dice {scores.dice:.3f} ({done['wall_s']:.0f} s training)")
    except Exception as exc:  # noqa: BLE001 - one failure must not lose the whole benchmark
        result.notes.append(f"oracle failed: {type(exc).__name__}: {exc}")
        log(f"[{shift}] oracle failed: {exc}")

    from uda_core.models.standardise import standardised
    methods, notes = applicable_methods(config, shift, bundle)
    result.notes.extend(notes)
    paired = [_image(data_dir, SOURCE_DOMAIN, s) for s in config.targets]
    source = [_image(data_dir, SOURCE_DOMAIN, s) for s in config.source_subjects]
    for method in methods:
        row = MethodResult(method)
        base, std = split_method(method)
        for seed in config.seeds_for(shift, method):
            settings = {**config.engine_settings, "seed": seed}
            if config.steps is not None:
                settings["steps"] = config.steps
            job: dict[str, Any] = {
                "model": config.model, "method": base, "standardise": std,
                "targets": targets, "reference": labels,
                "out_dir": work / "runs" / shift / f"{method}-seed{seed}",
                "paired": paired if base == "ddm" else None,
                "source": source if base == "adaptsegnet" or (
                    base == "ddm" and config.ddm_with_source) else None,
                "engine_settings": settings, "device": config.device,
                "threads": config.threads}
            try:
                done = recorded_child(children.adapt_job, job,
                                      job["out_dir"] / "bench_record.json", config.reuse, log,
                                      fresh_dir=job["out_dir"])
                summary = done["summary"]
                scores = _score_files(summary["masks"], labels, names)
            except Exception as exc:  # noqa: BLE001 - record it and go on
                row.errors.append(f"seed {seed}: {type(exc).__name__}: {exc}")
                log(f"[{shift}] {method} seed {seed} failed: {exc}")
                continue
            row.seeds.append(seed)
            row.scores.append(scores)
            row.wall_s.append(done["wall_s"])
            row.steps_per_s.append(summary["steps_per_second"])
            row.peak_mb.append(done["peak_mb"])
            row.steps.append(summary["steps_done"])
            row.chosen_steps.append(summary["chosen_step"])
            row.kept_source.append(bool(summary.get("kept_source", False)))
            row.outcomes.append(str(summary.get("outcome", "")))
            choice, step0, hindsight = reference_dice(job["out_dir"] / "metrics.jsonl",
                                                      summary["chosen_step"])
            row.choice_dice.append(choice)
            row.step0_dice.append(step0)
            row.hindsight_dice.append(hindsight)
            try:  # a standardising run's weights expect standardised input
                row.last_dice.append(_last_step_dice(
                    standardised(bundle) if summary.get("standardised") else bundle, device,
                    job["out_dir"], targets, labels))
            except Exception as exc:  # noqa: BLE001 - a diagnosis only
                row.last_dice.append(float("nan"))
                log(f"[{shift}] {method} seed {seed}: last-step Dice failed: {exc}")
            log(f"[{shift}] {method} seed {seed}: Dice {scores.dice:.3f} (chose step "
                f"{summary['chosen_step']} of {summary['steps_done']}; last step "
                f"{row.last_dice[-1]:.3f}; scored slices chosen/best {choice:.3f}/"
                f"{hindsight:.3f}), {done['wall_s']:.0f} s")
        result.methods.append(row)
    return result


# --- the whole benchmark ---------------------------------------------------------------------

def run_benchmark(config: BenchConfig, log: Log = _stderr) -> BenchResult:
    """Run every shift, then the engine-overhead measurement; returns all the numbers."""
    from uda_core.engine.device import resolve_device
    from uda_core.methods.registry import METHODS
    from uda_core.models.bundle import load_model
    from uda_core.synth.domains import DOMAINS
    for shift in config.shifts:
        if shift not in DOMAINS or shift == SOURCE_DOMAIN:
            raise UdaError(f"unknown shift {shift!r}; choose from "
                           f"{', '.join(d for d in DOMAINS if d != SOURCE_DOMAIN)}")
    for name in [*config.methods, *([config.default_method] if config.default_method else [])]:
        base, std = split_method(name)
        if base not in METHODS:
            raise UdaError(f"unknown method {name!r}; choose from {', '.join(METHODS)} (each "
                           f"may end in {STD_SUFFIX!r}: standardise the targets first)")
        if std and base == "standardise":
            raise UdaError(f"{name!r}: standardise already standardises; use 'standardise'")
    started = time.perf_counter()
    outer = log

    def stamped(line: str) -> None:  # every line stamped with the time since the start
        outer(f"[{time.perf_counter() - started:6.0f} s] {line}")

    log = stamped

    import torch
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    bundle = load_model(config.model)
    keep = config.work_dir is not None
    work = (Path(config.work_dir) if config.work_dir is not None
            else Path(tempfile.mkdtemp(prefix="uda-bench-")))
    try:
        work.mkdir(parents=True, exist_ok=True)
        data_dir = work / "data"
        ensure_demo_data(config, data_dir, log)
        shifts = {s: run_shift(config, s, bundle, device, data_dir, work, log)
                  for s in config.shifts}
        default_run = _default_run(config, data_dir, work, log)
        overhead = None
        if config.overhead_steps > 0 and config.shifts:
            shift = "protocol" if "protocol" in config.shifts else config.shifts[0]
            timed = [_image(data_dir, shift, s) for s in config.targets[:3]]
            job = {"model": config.model, "device": config.device, "targets": timed,
                   "steps": config.overhead_steps, "warmup": config.overhead_warmup,
                   "repeats": config.overhead_repeats, "batch_size": config.batch_size,
                   "engine_settings": config.engine_settings, "threads": config.threads}
            try:
                overhead = {"shift": shift, "volumes": len(timed),
                            **in_child(children.overhead_job, job)}
                log(f"engine overhead: engine {np.mean(overhead['engine']):.3f} steps/s, "
                    f"bare {np.mean(overhead['bare']):.3f} steps/s")
            except Exception as exc:  # noqa: BLE001
                overhead = {"shift": shift, "error": f"{type(exc).__name__}: {exc}"}
                log(f"engine overhead failed: {exc}")
        machine = machine_info(str(device))
    finally:
        torch.set_num_threads(threads_before)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return BenchResult(config, shifts, overhead, machine, time.perf_counter() - started,
                       default_run)


def _default_run(config: BenchConfig, data_dir: Path, work: Path, log: Log) -> dict | None:
    """The timed default run (see BenchConfig.default_method) in a fresh process: its wall
    seconds from files to files; None when the config asks for none or has no shift."""
    if not config.default_method or not config.shifts:
        return None
    shift = next((s for s in config.shifts if s in T1W_SHIFTS), config.shifts[0])
    base, std = split_method(config.default_method)
    targets = [_image(data_dir, shift, s) for s in config.targets[:3]]
    job: dict[str, Any] = {
        "model": config.model, "method": base, "standardise": std, "targets": targets,
        "reference": None, "out_dir": work / "default-run", "paired": None, "source": None,
        "engine_settings": {}, "device": config.device, "threads": config.threads}
    head = {"method": config.default_method, "shift": shift}
    try:
        done = recorded_child(children.adapt_job, job, work / "default-run.json",
                              config.reuse, log, fresh_dir=job["out_dir"])
    except Exception as exc:  # noqa: BLE001 - one failure must not lose the whole benchmark
        log(f"default run failed: {exc}")
        return {**head, "error": f"{type(exc).__name__}: {exc}"}
    log(f"default run: {config.default_method} on {len(targets)} {shift} volumes, "
        f"{done['summary']['steps_done']} steps, {done['wall_s']:.0f} s")
    return {**head, "volumes": len(targets), "steps": done["summary"]["steps_done"],
            "wall_s": done["wall_s"]}
