"""The run loop every adaptation method shares.

Builds batches, runs the method's steps on the chosen device (bfloat16 autocast on CUDA),
emits events, scores the network without labels, keeps the best checkpoint, rolls back on
collapse, and obeys cancel/pause from another thread. Checkpoints are written atomically, so
a crash or a cancel leaves a usable one.

What the engine adapts on is a *task*: an object that samples batches, scores the network
without labels (plus reference numbers for evaluation only) and says when a prediction has
collapsed. The loop itself (steps, events, cancel/pause, scoring interval, best/last
checkpoints, resume, rollback, select_by) knows nothing about segmentation or registration.

- ``Engine(method, data)`` with an :class:`~uda_core.adaptation_data.AdaptationData` wraps it
  in :class:`SegmentationTask` (target slices, segmentation scores, previews): the behaviour
  of the segmentation methods is unchanged.
- Any other ``data`` must follow :class:`EngineTask` (duck-typed), e.g.
  :class:`uda_core.registration.reg_data.RegistrationTask` for registration adaptation
  (source/target pairs, head discrepancy and entropy as label-free scores, accuracy and
  endpoint error as reference numbers when the true displacements are known).

Whatever a task's ``sample_batch`` returns is handed to ``method.step`` unchanged. The
collapse guard compares the task's "collapse state" (a small float array: class shares for
segmentation, [share of the commonest displacement label, entropy] for registration) with the
one before the first update; the engine stores it in the checkpoints' ``best`` record.
EngineConfig's batch_size and skip_empty_slices are read by SegmentationTask; a registration
run takes its batch sizes from the method's config and score_slices as the number of scored
pairs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from uda_core import label_free
from uda_core.adaptation_data import AdaptationData
from uda_core.checkpoints import load_checkpoint, save_checkpoint
from uda_core.events import (
    CheckpointEvent,
    FinishedEvent,
    PreviewEvent,
    RollbackEvent,
    ScoreEvent,
    StepEvent,
)
from uda_core.inference import predict_slices
from uda_core.methods.base import AdaptationMethod, Batch
from uda_core.preprocess import probabilities_to_input_grid
from uda_core.prior import prior_for_positions

FALLBACK_SELECTION = "info_max"
SELECTION_SCORES = (*label_free.HIGHER_IS_BETTER, "last")  # segmentation's choices


@dataclass
class EngineConfig:
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"select_by": SELECTION_SCORES}

    """How a run is driven (method settings live in the method's own config)."""

    steps: int = 300                 # updates in the run
    batch_size: int = 16             # target slices per update
    seed: int = 0                    # random seed of batch sampling and initialisation
    skip_empty_slices: bool = True   # sample only slices that show the head
    score_every: int = 50            # label-free scoring interval (steps); 0 = only at the end
    score_slices: int = 32           # fixed target slices scored each time
    checkpoint_every: int = 50       # write last.pt every N steps (needs an output folder)
    preview_every: int = 0           # PreviewEvent every N steps (and of every target at step
                                     # 0); 0 = off. Which target: RunControl.preview_index
    select_by: str = "prior_kl"      # label-free score that chooses the checkpoint ("prior_kl"
                                     # falls back to "info_max" for a model without a prior;
                                     # chosen on validation subjects, BENCHMARKS.md)
    patience: int = 0                # stop after this many scorings without improvement; 0 = off
    collapse_guard: bool = True      # roll back when a class vanishes or the output is constant
    max_rollbacks: int = 3           # stop the run after this many collapses
    amp: bool = True                 # bfloat16 autocast on CUDA


class RunControl:
    """Cancel and pause, safe to call from any thread."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self.preview_index = 0   # the target volume previews show (set by a viewer)

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self) -> float:
        """Block while paused; returns the seconds spent waiting."""
        if self._running.is_set():
            return 0.0
        start = time.perf_counter()
        self._running.wait()
        return time.perf_counter() - start


@dataclass
class RunResult:
    status: str
    steps_done: int
    best_step: int
    best_scores: dict
    history: list[dict] = field(default_factory=list)
    network_state: dict | None = None   # the chosen weights (on the CPU)


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class EngineTask(Protocol):
    """What the engine needs from the data of a run (duck-typed; see the module doc).

    higher_is_better: {label-free score name: True if higher is better}; select_by must be
        one of them (or "last").
    n_previews: how many targets previews can show (0: the task makes no previews).
    """

    higher_is_better: dict[str, bool]
    n_previews: int

    def sample_batch(self, rng: np.random.Generator) -> Any:
        """One batch for ``method.step``, drawn with the engine's (checkpointed) generator."""

    def score(self) -> tuple[dict, dict | None, np.ndarray]:
        """(label-free scores, reference numbers or None, collapse state): the collapse state
        is a small float array that ``collapse_reason`` compares with the one before any
        update. Called with the method in inference mode."""

    def collapse_reason(self, state: np.ndarray, initial: np.ndarray) -> str | None:
        """Why the prediction counts as collapsed, or None."""

    def preview(self, step: int, index: int) -> PreviewEvent:
        """The current prediction of target ``index`` (only when n_previews > 0)."""


class SegmentationTask:
    """Segmentation adaptation on target slices (AdaptationData) as an :class:`EngineTask`.

    Batches: ``batch_size`` random target slices (skipping empty ones if asked), with paired
    source-modality slices and labelled source slices when the data has them. Scores: on
    ``score_slices`` fixed target slices, see :mod:`uda_core.label_free`; reference: Dice
    against reference labels when given. Collapse state: the predicted class shares.
    """

    higher_is_better = label_free.HIGHER_IS_BETTER

    def __init__(self, method: AdaptationMethod, data: AdaptationData, config: EngineConfig):
        self.method = method
        self.data = data
        self.config = config
        self.device = method.device
        self.network = method.network
        self.num_classes = len(method.bundle.class_names)
        self.pool = data.training_slices(config.skip_empty_slices)
        self.n_previews = len(data.inputs)
        self._score_set = self._build_score_set()

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(1).to(self.device)

    def sample_batch(self, rng: np.random.Generator) -> Batch:
        size = self.config.batch_size
        pick = rng.integers(0, len(self.pool.volume), size)
        vols, zs = self.pool.volume[pick], self.pool.slice[pick]
        images = np.stack([self.data.inputs[v].slices[z] for v, z in zip(vols, zs, strict=True)])
        positions = np.array([self.data.inputs[v].positions[z]
                              for v, z in zip(vols, zs, strict=True)], dtype=np.float32)
        batch = Batch(self._tensor(images), torch.from_numpy(positions).to(self.device))
        if self.data.paired is not None:
            paired = np.stack([self.data.paired[v][z] for v, z in zip(vols, zs, strict=True)])
            batch.paired_source = self._tensor(paired)
        if self.data.source_images is not None:
            src = rng.integers(0, len(self.data.source_images), size)
            batch.source = self._tensor(self.data.source_images[src])
            batch.source_labels = torch.from_numpy(self.data.source_labels[src]).to(self.device)
        return batch

    def _build_score_set(self) -> dict:
        rng = np.random.default_rng(self.config.seed + 1)
        n = min(self.config.score_slices, len(self.pool.volume))
        pick = np.sort(rng.choice(len(self.pool.volume), n, replace=False))
        vols, zs = self.pool.volume[pick], self.pool.slice[pick]
        pairs = list(zip(vols, zs, strict=True))
        images = np.stack([self.data.inputs[v].slices[z] for v, z in pairs])
        positions = np.array([self.data.inputs[v].positions[z] for v, z in pairs])
        score_set = {"images": self._tensor(images), "positions": positions}
        if self.data.reference is not None:
            score_set["reference"] = torch.from_numpy(
                np.stack([self.data.reference[v][z] for v, z in pairs]))
        prior = self.method.bundle.class_ratio_prior
        if prior:
            score_set["prior"] = torch.from_numpy(
                prior_for_positions(prior, positions).astype(np.float32)).to(self.device)
        return score_set

    @torch.no_grad()
    def _probs(self, images: torch.Tensor) -> torch.Tensor:
        chunks = [torch.softmax(self.network(images[i:i + 16]).float(), dim=1)
                  for i in range(0, len(images), 16)]
        return torch.cat(chunks)

    @torch.no_grad()
    def score(self) -> tuple[dict, dict | None, np.ndarray]:
        """Label-free scores on the fixed score slices, the reference Dice when labels were
        given, and the predicted class shares (for the collapse guard)."""
        images = self._score_set["images"]
        probs = self._probs(images)
        labels = probs.argmax(1)
        flipped = self._probs(images.flip(-2)).flip(-2).argmax(1)
        brighter = self._probs(images * 1.1 + 0.1).argmax(1)
        scores = {
            "entropy": label_free.mean_entropy(probs),
            "info_max": label_free.information_maximisation(probs),
            "consistency": 0.5 * (label_free.label_agreement(labels, flipped, self.num_classes)
                                  + label_free.label_agreement(labels, brighter,
                                                               self.num_classes)),
            "snd": label_free.soft_neighbourhood_density(
                probs, generator=torch.Generator().manual_seed(self.config.seed)),
        }
        if "prior" in self._score_set:
            scores["prior_kl"] = label_free.prior_divergence(probs, self._score_set["prior"])
        if getattr(self.method.bundle, "has_early_head", False) and hasattr(
                self.network, "forward_with_early"):
            early = torch.cat([self.network.forward_with_early(images[i:i + 16])[1].argmax(1)
                               for i in range(0, len(images), 16)])
            scores["early_agreement"] = label_free.label_agreement(labels, early,
                                                                   self.num_classes)
        reference = None
        if "reference" in self._score_set:
            ref = self._score_set["reference"].to(labels.device)
            reference = {"dice": label_free.label_agreement(labels, ref, self.num_classes)}
        return scores, reference, label_free.class_shares(labels, self.num_classes)

    def collapse_reason(self, state: np.ndarray, initial: np.ndarray) -> str | None:
        return label_free.collapse_reason(state, initial)

    @torch.no_grad()
    def preview(self, step: int, index: int) -> PreviewEvent:
        """Current prediction of one target, on its model grid and on its own grid."""
        model_input = self.data.inputs[index]
        probs = predict_slices(self.network, model_input.slices, self.device)
        on_input = probabilities_to_input_grid(probs, model_input, self.data.volumes[index])
        return PreviewEvent(step, index, probs.argmax(0).astype(np.uint8),
                            on_input.argmax(0).astype(np.uint8))


class Engine:
    """Runs one adaptation: `Engine(method, data, config).run()`.

    ``data``: an AdaptationData (segmentation, wrapped in :class:`SegmentationTask`) or any
    :class:`EngineTask`.
    """

    def __init__(self, method: AdaptationMethod, data: AdaptationData | EngineTask,
                 config: EngineConfig | None = None, out_dir: str | Path | None = None,
                 listeners: Iterable[Callable] = (), control: RunControl | None = None):
        self.method = method
        self.data = data
        self.config = config or EngineConfig()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.listeners = list(listeners)
        self.control = control or RunControl()
        self.device = method.device
        self.network = method.network
        self.rng = np.random.default_rng(self.config.seed)
        self.task = (SegmentationTask(method, data, self.config)
                     if isinstance(data, AdaptationData) else data)
        choices = (*self.task.higher_is_better, "last")  # "last": the final good weights
        if self.config.select_by not in choices:
            raise ValueError(f"select_by must be one of {', '.join(choices)}")
        self.history: list[dict] = []

    # --- events ---------------------------------------------------------------------------

    def emit(self, event) -> None:
        for listener in self.listeners:
            listener(event)

    # --- batches, scores, previews (the task's) -------------------------------------------

    def sample_batch(self):
        return self.task.sample_batch(self.rng)

    def score(self) -> tuple[dict, dict | None, np.ndarray]:
        """The task's label-free scores, reference numbers and collapse state, computed with
        the method in inference mode."""
        self.method.inference_mode()
        try:
            scores, reference, state = self.task.score()
        finally:
            self.method.train_mode()
        return scores, reference, np.asarray(state, dtype=np.float64)

    def preview(self, step: int, volume_index: int) -> PreviewEvent:
        self.method.inference_mode()
        try:
            return self.task.preview(step, volume_index)
        finally:
            self.method.train_mode()

    def _selection(self, scores: dict, step: int) -> float:
        if self.config.select_by == "last":
            return float(step)
        name = self.config.select_by
        if name == "prior_kl" and name not in scores:
            name = FALLBACK_SELECTION  # no class-ratio prior to compare with
        value = scores.get(name, float("nan"))
        return value if self.task.higher_is_better[name] else -value

    # --- checkpoints ----------------------------------------------------------------------

    def _snapshot(self, step: int) -> dict:
        return {"step": step, "network": _cpu_state(self.network),
                "modules": {k: _cpu_state(m) for k, m in self.method.extra_modules().items()},
                "method_state": self.method.extra_state()}

    def _restore(self, snapshot: dict) -> None:
        self.network.load_state_dict(snapshot["network"])
        for name, module in self.method.extra_modules().items():
            module.load_state_dict(snapshot["modules"][name])
        self.method.load_extra_state(snapshot["method_state"])

    def _write_checkpoint(self, name: str, step: int, best: dict) -> None:
        if self.out_dir is None:
            return
        content = {**self._snapshot(step), "rng": self.rng.bit_generator.state,
                   "torch_rng": torch.get_rng_state(), "best": best,
                   "history": self.history, "method": self.method.name}
        path = save_checkpoint(self.out_dir / "checkpoints" / name, content)
        self.emit(CheckpointEvent(step, str(path), name == "best.pt"))

    # --- the loop -------------------------------------------------------------------------

    def _autocast(self):
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(self, resume_from: str | Path | None = None) -> RunResult:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.method.setup()
        self.method.train_mode()
        start_step = 0
        if resume_from is not None:
            saved = load_checkpoint(resume_from)
            self._restore(saved)
            self.rng.bit_generator.state = saved["rng"]
            torch.set_rng_state(saved["torch_rng"])
            self.history = list(saved["history"])
            start_step = int(saved["step"])
            best = saved["best"]
            initial_state = np.asarray(best.get("initial_state", best.get("initial_shares")))
            best_snapshot = (self._snapshot(start_step) if best["step"] == start_step else
                             load_checkpoint(Path(resume_from).with_name("best.pt")))
            good_snapshot = self._snapshot(start_step)
        else:
            scores, reference, initial_state = self.score()
            best = {"step": 0, "selection": self._selection(scores, 0), "scores": scores,
                    "initial_state": initial_state.tolist()}
            self._record_scores(0, scores, reference, best, True)
            best_snapshot = good_snapshot = self._snapshot(0)
            self._write_checkpoint("best.pt", 0, best)
            if cfg.preview_every:
                for index in range(self.task.n_previews):
                    self.emit(self.preview(0, index))
        status, message, rollbacks, stale = "completed", "", 0, 0
        paused_s, started = 0.0, time.perf_counter()
        step = start_step
        while step < cfg.steps:
            paused_s += self.control.wait_while_paused()
            if self.control.cancelled:
                status, message = "cancelled", f"cancelled after {step} steps"
                break
            batch = self.sample_batch()
            with self._autocast():
                losses = self.method.step(batch)
            step += 1
            self.history.append({"step": step, **{f"loss/{k}": v for k, v in losses.items()}})
            self.emit(StepEvent(step, cfg.steps, losses,
                                time.perf_counter() - started - paused_s))
            last = step == cfg.steps
            if (cfg.score_every and step % cfg.score_every == 0) or last:
                scores, reference, state = self.score()
                reason = (self.task.collapse_reason(state, initial_state)
                          if cfg.collapse_guard else None)
                if reason is not None:
                    rollbacks += 1
                    self._restore(good_snapshot)
                    self.method.on_rollback()
                    self.emit(RollbackEvent(step, good_snapshot["step"], reason))
                    if rollbacks > cfg.max_rollbacks:
                        status = "collapsed"
                        message = f"stopped: collapsed {rollbacks} times ({reason})"
                        break
                    continue
                selection = self._selection(scores, step)
                is_best = selection > best["selection"]
                if is_best:
                    best.update(step=step, selection=selection, scores=scores)
                    best_snapshot = self._snapshot(step)
                    stale = 0
                    self._write_checkpoint("best.pt", step, best)
                else:
                    stale += 1
                good_snapshot = self._snapshot(step)
                self._record_scores(step, scores, reference, best, is_best)
                if cfg.patience and stale >= cfg.patience:
                    status = "stopped early"
                    message = (f"stopped early at step {step}: {cfg.select_by} did not improve "
                               f"for {stale} scorings")
                    break
            if cfg.preview_every and self.task.n_previews and step % cfg.preview_every == 0:
                index = min(max(int(self.control.preview_index), 0), self.task.n_previews - 1)
                self.emit(self.preview(step, index))
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self._write_checkpoint("last.pt", step, best)
        self._write_checkpoint("last.pt", step, best)
        self._restore(best_snapshot)
        self.method.finish(self.data)
        self.method.inference_mode()
        message = message or f"{step} steps; chose step {best['step']} by {cfg.select_by}"
        self.emit(FinishedEvent(status, step, best["step"], message))
        return RunResult(status, step, best["step"], best["scores"], self.history,
                         _cpu_state(self.network))

    def _record_scores(self, step, scores, reference, best, is_best) -> None:
        row = {"step": step, **{f"score/{k}": v for k, v in scores.items()}}
        if reference:
            row.update({f"reference/{k}": v for k, v in reference.items()})
        self.history.append(row)
        self.emit(ScoreEvent(step, scores, reference, self._selection(scores, step), is_best))
