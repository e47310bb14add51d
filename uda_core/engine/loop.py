"""The run loop every adaptation method shares.

Builds batches, runs the method's steps on the chosen device (bfloat16 autocast on CUDA),
emits events, scores the network without labels, keeps the best checkpoint, rolls back on
collapse, and obeys cancel/pause from another thread. Checkpoints are written atomically, so
a crash or a cancel leaves a usable one.

What the engine adapts on is a *task*: an object that samples batches, scores the network
without labels (plus reference numbers for evaluation only) and says when a prediction has
collapsed. The loop itself (steps, events, cancel/pause, scoring interval, best/last
checkpoints, resume, rollback, select_by) knows nothing about segmentation or registration.

The engine imports no task: tasks live in :mod:`uda_core.tasks` and follow
:class:`EngineTask`, e.g. :class:`~uda_core.tasks.segmentation.SegmentationTask` (target
slices, segmentation scores, previews) and
:class:`~uda_core.tasks.registration.RegistrationTask` (source/target pairs, head discrepancy
and entropy as label-free scores, accuracy and endpoint error as reference numbers when the
true displacements are known).

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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from uda_core.engine.checkpoints import load_checkpoint, save_checkpoint
from uda_core.engine.config import AUTO_SELECTION, FALLBACK_SELECTION, EngineConfig
from uda_core.engine.control import RunControl
from uda_core.engine.events import (
    CheckpointEvent,
    EngineEvent,
    FinishedEvent,
    PreviewEvent,
    RegPreviewEvent,
    ResumedEvent,
    RollbackEvent,
    ScoreEvent,
    StepEvent,
)
from uda_core.engine.listeners import Listener
from uda_core.errors import ModelError
from uda_core.methods.base import AdaptationMethod
from uda_core.models.distributed import average_array, average_numbers
from uda_core.scores.label_free import gain as label_free_gain


@dataclass
class RunResult:
    status: str
    steps_done: int
    best_step: int
    best_scores: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    network_state: dict[str, torch.Tensor] | None = None   # the chosen weights (on the CPU)
    selected_by: str = ""        # the score that chose (select_by "auto" resolved), or "last"
    kept_source: bool = False    # no step was confidently better: the source weights kept
    outcome: str = ""            # one line for people: what was chosen and why


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
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

    def score(self) -> tuple[dict[str, float], dict[str, float] | None, np.ndarray]:
        """(label-free scores, reference numbers or None, collapse state): the collapse state
        is a small float array that ``collapse_reason`` compares with the one before any
        update. Called with the method in inference mode."""

    def collapse_reason(self, state: np.ndarray, initial: np.ndarray) -> str | None:
        """Why the prediction counts as collapsed, or None."""

    def preview(self, step: int, index: int) -> PreviewEvent | RegPreviewEvent:
        """The current prediction of target ``index`` (only when n_previews > 0)."""


class Engine:
    """Runs one adaptation: ``Engine(method, task, config).run()``.

    ``task``: any :class:`EngineTask`, e.g. :class:`uda_core.tasks.segmentation.SegmentationTask`
    or :class:`uda_core.tasks.registration.RegistrationTask`. ``identity``: what makes this run
    this run (settings, data fingerprints; plain builtins), stored in its checkpoints; a resume
    from a checkpoint whose identity differs is refused, naming the entries that differ.
    """

    def __init__(self, method: AdaptationMethod[Any], task: EngineTask,
                 config: EngineConfig | None = None, out_dir: str | Path | None = None,
                 listeners: Iterable[Listener] = (), control: RunControl | None = None,
                 identity: dict[str, Any] | None = None) -> None:
        self.method = method
        self.identity = identity
        self.config = config or EngineConfig()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.listeners = list(listeners)
        self.control = control or RunControl()
        self.device = method.device
        self.network = method.network
        self.rng = np.random.default_rng(self.config.seed)
        self.task = task
        choices = ("auto", *self.task.higher_is_better, "last")  # "last": final good weights
        if self.config.select_by not in choices:
            raise ValueError(f"select_by must be one of {', '.join(choices)}")
        circular = set(method.circular_scores)
        if self.config.select_by in circular:
            independent = [c for c in choices if c not in circular]
            raise ValueError(
                f"select_by {self.config.select_by} is optimised by {method.name}'s own loss, "
                f"so it would rise while the run fails; choose one of {', '.join(independent)}")
        self.history: list[dict[str, Any]] = []
        self.selected_by = "" if self.config.select_by == "auto" else self.config.select_by
        self._skipped_unconfident = 0   # scorings better than step 0 but not by min_gain

    # --- events ---------------------------------------------------------------------------

    def emit(self, event: EngineEvent) -> None:
        for listener in self.listeners:
            listener(event)

    # --- batches, scores, previews (the task's) -------------------------------------------

    def sample_batch(self) -> Any:
        return self.task.sample_batch(self.rng)

    def score(self) -> tuple[dict[str, float], dict[str, float] | None, np.ndarray]:
        """The task's label-free scores, reference numbers and collapse state, computed with
        the method in inference mode."""
        self.method.inference_mode()
        try:
            scores, reference, state = self.task.score()
        finally:
            self.method.train_mode()
        # under torchrun every rank scored its share: all decide on the means
        reference = average_numbers(reference) if reference is not None else None
        return (average_numbers(scores), reference,
                average_array(np.asarray(state, dtype=np.float64)))

    def preview(self, step: int, volume_index: int) -> PreviewEvent | RegPreviewEvent:
        self.method.inference_mode()
        try:
            return self.task.preview(step, volume_index)
        finally:
            self.method.train_mode()

    def _selection_score(self, scores: dict[str, float]) -> str:
        """The score that chooses: select_by, or for "auto" the first of AUTO_SELECTION the
        task computed and the method's loss does not optimise (fixed at the first scoring)."""
        if not self.selected_by:
            circular = set(self.method.circular_scores)
            offered = [n for n in AUTO_SELECTION
                       if n in scores and n in self.task.higher_is_better and n not in circular]
            others = [n for n in scores if n in self.task.higher_is_better and n not in circular]
            if not offered and not others:
                raise ValueError(f"no label-free score independent of {self.method.name}'s "
                                 "loss to choose checkpoints by; give select_by last")
            self.selected_by = (offered or others)[0]
        name = self.selected_by
        if name == "prior_kl" and name not in scores:
            name = FALLBACK_SELECTION  # no class-ratio prior to compare with
        return name

    def _selection(self, scores: dict[str, float], step: int) -> float:
        if self.config.select_by == "last":
            return float(step)
        name = self._selection_score(scores)
        value = scores.get(name, float("nan"))
        return value if self.task.higher_is_better[name] else -value

    def _guards(self, selected: str, scores: dict[str, float]) -> list[str]:
        """The guard scores (guard_by, comma-separated) that apply to a choice by `selected`:
        those scored here that are neither the selection score nor optimised by the method."""
        return [g for g in self.config.guard_names
                if g != selected and g not in self.method.circular_scores
                and g in scores and g in self.task.higher_is_better]

    def _confident(self, scores: dict[str, float], best: dict[str, Any]) -> bool:
        """"First, do no harm": a step may replace the source weights only when its selection
        score beats step 0's by more than min_gain (label_free.gain) and no guard score
        (guard_by) is worse than step 0's by more than guard_tolerance."""
        if self.config.select_by == "last":
            return True
        name = self._selection_score(scores)
        if "initial_scores" not in best:
            return True   # a checkpoint written before the rule existed
        initial = best["initial_scores"]
        change = label_free_gain(name, initial.get(name, float("nan")),
                                 scores.get(name, float("nan")),
                                 self.task.higher_is_better[name])
        if not change > self.config.min_gain:
            return False
        return not any(
            label_free_gain(g, initial.get(g, float("nan")), scores[g],
                            self.task.higher_is_better[g]) < -self.config.guard_tolerance
            for g in self._guards(name, scores))

    # --- checkpoints ----------------------------------------------------------------------

    def _snapshot(self, step: int) -> dict[str, Any]:
        return {"step": step, "network": _cpu_state(self.network),
                "modules": {k: _cpu_state(m) for k, m in self.method.extra_modules().items()},
                "method_state": self.method.extra_state()}

    def _restore(self, snapshot: dict[str, Any]) -> None:
        self.network.load_state_dict(snapshot["network"])
        for name, module in self.method.extra_modules().items():
            module.load_state_dict(snapshot["modules"][name])
        self.method.load_extra_state(snapshot["method_state"])

    def _write_checkpoint(self, name: str, step: int, best: dict[str, Any]) -> None:
        if self.out_dir is None:
            return
        content = {**self._snapshot(step), "rng": self.rng.bit_generator.state,
                   "torch_rng": torch.get_rng_state(), "best": best,
                   "history": self.history, "method": self.method.name}
        if self.identity is not None:
            content["identity"] = self.identity
        path = save_checkpoint(self.out_dir / "checkpoints" / name, content)
        self.emit(CheckpointEvent(step, str(path), name == "best.pt"))

    # --- the loop -------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(self, resume_from: str | Path | None = None) -> RunResult:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.method.setup()
        self.method.train_mode()
        self.control.check("starting the run")
        start_step, best, initial_state, best_snapshot = (
            self._resume(resume_from) if resume_from is not None else self._begin())
        if resume_from is not None:
            self.emit(ResumedEvent(start_step, str(resume_from)))
        self.control.check("scoring the model before adaptation")
        self.control.abortable = False   # from here on a cancel stops between steps
        good_snapshot = self._snapshot(start_step) if resume_from is not None else best_snapshot
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
                losses = average_numbers(self.method.step(batch))
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
                if is_best and not self._confident(scores, best):
                    is_best = False
                    self._skipped_unconfident += 1
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
        self.method.finish()
        self.method.inference_mode()
        selected_by = ("last" if cfg.select_by == "last"
                       else self._selection_score(best["scores"]))
        kept_source = best["step"] == 0 and step > 0 and cfg.select_by != "last"
        outcome = self._outcome(best, selected_by, kept_source)
        message = f"{message}; {outcome}" if message else f"{step} steps; {outcome}"
        self.emit(FinishedEvent(status, step, best["step"], message))
        return RunResult(status, step, best["step"], best["scores"], self.history,
                         _cpu_state(self.network), selected_by, kept_source, outcome)

    def _outcome(self, best: dict[str, Any], selected_by: str, kept_source: bool) -> str:
        """One line: the chosen step and why, or why the source weights were kept."""
        if not kept_source:
            if selected_by == "last":
                why = ("; no label-free score judges " + self.method.name + ", its step was "
                       "chosen on validation subjects"
                       if self.method.default_select_by == "last" else "")
                return f"kept step {best['step']} (the last good weights{why})"
            initial = best.get("initial_scores", {}).get(selected_by, float("nan"))
            value = best["scores"].get(selected_by, float("nan"))
            return (f"chose step {best['step']} by {selected_by} ({initial:.4g} at step 0 -> "
                    f"{value:.4g})")
        if not self.method.changes_weights:
            return f"the source weights ({self.method.name} trains nothing)"
        guards = self._guards(selected_by, best["scores"])
        guarded = f" with {' and '.join(guards)} no worse" if guards else ""
        why = (f"no step beat it on {selected_by}{guarded} (min_gain "
               f"{self.config.min_gain:g})" if self._skipped_unconfident
               else f"no step scored better on {selected_by}")
        return f"kept the source weights (step 0): {why}"

    def _begin(self) -> tuple[int, dict[str, Any], np.ndarray, dict[str, Any]]:
        """A fresh run: score the untouched network (step 0, the "do nothing" choice), write
        best.pt and the step-0 previews. Returns (0, best record, collapse state, snapshot)."""
        scores, reference, initial_state = self.score()
        best = {"step": 0, "selection": self._selection(scores, 0), "scores": scores,
                "initial_state": initial_state.tolist(), "initial_scores": dict(scores)}
        self._record_scores(0, scores, reference, best, True)
        snapshot = self._snapshot(0)
        self._write_checkpoint("best.pt", 0, best)
        if self.config.preview_every:
            for index in range(self.task.n_previews):
                self.control.check("showing the masks before adaptation")
                self.emit(self.preview(0, index))
        return 0, best, initial_state, snapshot

    def _check_resumable(self, saved: dict[str, Any], path: Path) -> None:
        """ModelError (one line naming the file) for a checkpoint of another method, another
        network, another run's length or one missing what a resume needs."""
        missing = [k for k in ("step", "network", "modules", "method_state", "rng",
                               "torch_rng", "best", "history") if k not in saved]
        if missing:
            raise ModelError(f"is not a resumable checkpoint (missing {', '.join(missing)})",
                             path)
        if saved.get("method") != self.method.name:
            raise ModelError(f"is a checkpoint of method {saved.get('method')!r}, not "
                             f"{self.method.name!r}; resume with the method that wrote it",
                             path)
        ours = self.network.state_dict()
        theirs = saved["network"]
        if set(ours) != set(theirs) or any(
                tuple(ours[k].shape) != tuple(theirs[k].shape) for k in ours):
            raise ModelError("is a checkpoint of another network (its weights do not fit "
                             "this model); resume with the model of that run", path)
        if set(saved["modules"]) != set(self.method.extra_modules()):
            raise ModelError("was written with other method modules; resume with the "
                             "settings of that run", path)
        theirs_identity = saved.get("identity")
        if self.identity is not None and theirs_identity is not None:
            differ = sorted(k for k in set(self.identity) | set(theirs_identity)
                            if self.identity.get(k) != theirs_identity.get(k))
            if differ:
                raise ModelError(f"belongs to another run (its {', '.join(differ)} differ "
                                 "from this one's); resume with that run's data and settings",
                                 path)
        if int(saved["step"]) > self.config.steps:
            raise ModelError(f"is at step {int(saved['step'])}, past this run's "
                             f"{self.config.steps} steps; give --steps of at least that", path)

    def _resume(self, checkpoint: str | Path
                ) -> tuple[int, dict[str, Any], np.ndarray, dict[str, Any]]:
        """Continue from a last.pt: weights, method state, random state, history. Returns
        (its step, best record, collapse state before any update, best snapshot)."""
        saved = load_checkpoint(checkpoint)
        self._check_resumable(saved, Path(checkpoint))
        self._restore(saved)
        self.rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        self.history = list(saved["history"])
        step = int(saved["step"])
        best = saved["best"]
        initial_state = np.asarray(best.get("initial_state", best.get("initial_shares")))
        best_snapshot = (self._snapshot(step) if best["step"] == step else
                         load_checkpoint(Path(checkpoint).with_name("best.pt")))
        return step, best, initial_state, best_snapshot

    def _record_scores(self, step: int, scores: dict[str, float],
                       reference: dict[str, float] | None, best: dict[str, Any],
                       is_best: bool) -> None:
        row = {"step": step, **{f"score/{k}": v for k, v in scores.items()}}
        if reference:
            row.update({f"reference/{k}": v for k, v in reference.items()})
        self.history.append(row)
        self.emit(ScoreEvent(step, scores, reference, self._selection(scores, step), is_best))
