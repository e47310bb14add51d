"""The engine: cancel, pause/resume, resume from a checkpoint, the collapse guard."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tests.conftest import adaptation_data
from uda_core.engine import Engine, EngineConfig, RunControl
from uda_core.engine.checkpoints import load_checkpoint
from uda_core.engine.events import FinishedEvent, RollbackEvent, ScoreEvent, StepEvent
from uda_core.methods.base import AdaptationMethod
from uda_core.methods.sfda import SFDA, SFDAConfig
from uda_core.models.bundle import load_model
from uda_core.tasks.segmentation import SegmentationTask
from uda_core.tasks.segmentation_data import AdaptationData


def tiny_data(n_slices=8, seed=0) -> AdaptationData:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    disc = (grid[0] ** 2 + grid[1] ** 2 < 0.6).astype(np.float32)
    slices = np.stack([disc * 2 - 1 + rng.normal(0, 0.3, (32, 32)) for _ in range(n_slices)])
    return adaptation_data(slices)


def sfda_engine(bundle_path, out_dir=None, listeners=(), control=None, **engine_kw):
    bundle = load_model(bundle_path)
    bundle.class_ratio_prior = {"constant": [0.6, 0.1, 0.15, 0.15]}
    method = SFDA(bundle.build_network(), bundle, SFDAConfig(lr=1e-3), torch.device("cpu"))
    settings = dict(steps=6, batch_size=4, score_every=3, score_slices=4, checkpoint_every=3,
                    skip_empty_slices=False, collapse_guard=False, select_by="consistency")
    settings.update(engine_kw)
    config = EngineConfig(**settings)
    return Engine(method, SegmentationTask(method, tiny_data(), config), config, out_dir,
                  listeners, control)


def test_run_emits_steps_scores_and_writes_checkpoints(tiny_bundle_path, tmp_path):
    events = []
    result = sfda_engine(tiny_bundle_path, tmp_path, [events.append]).run()
    assert result.status == "completed" and result.steps_done == 6
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6]
    assert set(steps[0].losses) == {"entropy", "kl_prior", "total"}
    assert [e.step for e in events if isinstance(e, ScoreEvent)] == [0, 3, 6]
    assert isinstance(events[-1], FinishedEvent)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 6


def test_cancel_ends_within_one_step_and_leaves_a_checkpoint(tiny_bundle_path, tmp_path):
    control = RunControl()

    def cancel_at_two(event):
        if isinstance(event, StepEvent) and event.step == 2:
            control.cancel()

    result = sfda_engine(tiny_bundle_path, tmp_path, [cancel_at_two], control).run()
    assert result.status == "cancelled" and result.steps_done == 2
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert saved["step"] == 2 and "network" in saved


def test_pause_holds_the_run_and_resume_finishes_it(tiny_bundle_path):
    control = RunControl()
    seen = []

    def pause_at_two(event):
        if isinstance(event, StepEvent):
            seen.append(event.step)
            if event.step == 2:
                control.pause()

    engine = sfda_engine(tiny_bundle_path, None, [pause_at_two], control)
    results = []
    thread = threading.Thread(target=lambda: results.append(engine.run()))
    thread.start()
    deadline = time.time() + 30
    while len(seen) < 2 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert seen == [1, 2] and control.paused
    control.resume()
    thread.join(timeout=60)
    assert results and results[0].steps_done == 6 and seen == [1, 2, 3, 4, 5, 6]


def test_resume_from_checkpoint_gives_the_uninterrupted_result(tiny_bundle_path, tmp_path):
    straight = sfda_engine(tiny_bundle_path, tmp_path / "a").run()

    control = RunControl()

    def cancel_at_three(event):
        if isinstance(event, StepEvent) and event.step == 3:
            control.cancel()

    sfda_engine(tiny_bundle_path, tmp_path / "b", [cancel_at_three], control).run()
    resumed = sfda_engine(tiny_bundle_path, tmp_path / "b").run(
        resume_from=tmp_path / "b" / "checkpoints" / "last.pt")
    assert resumed.steps_done == 6 and resumed.best_step == straight.best_step
    for key, value in straight.network_state.items():
        torch.testing.assert_close(resumed.network_state[key], value, msg=key)


@dataclass
class _NoConfig:
    pass


class _Collapser(AdaptationMethod):
    """Pushes every pixel to class 0: the collapse the guard must catch."""

    name = "collapser"
    summary = "test"
    config_class = _NoConfig

    def step(self, batch):
        with torch.no_grad():
            self.network.final.bias[0] += 100.0
        return {"push": 1.0}


def test_collapse_guard_rolls_back_and_stops(tiny_bundle_path):
    bundle = load_model(tiny_bundle_path)
    network = bundle.build_network()
    with torch.no_grad():  # make the starting prediction use every class
        network.final.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0]))
    original_bias = network.final.bias.detach().clone()
    method = _Collapser(network, bundle, _NoConfig(), torch.device("cpu"))
    events = []
    config = EngineConfig(steps=20, batch_size=2, score_every=1, score_slices=4,
                          checkpoint_every=0, skip_empty_slices=False, max_rollbacks=2)
    result = Engine(method, SegmentationTask(method, tiny_data(), config), config, None,
                    [events.append]).run()
    rollbacks = [e for e in events if isinstance(e, RollbackEvent)]
    assert len(rollbacks) == 3 and "constant" in rollbacks[0].reason
    assert result.status == "collapsed"
    torch.testing.assert_close(network.final.bias, original_bias)


def test_unknown_selection_score_is_refused(tiny_bundle_path):
    with pytest.raises(ValueError, match="select_by"):
        sfda_engine(tiny_bundle_path, select_by="accuracy")


def test_previews_show_every_target_before_adaptation_then_the_chosen_one(
        tiny_bundle_path, tmp_path):
    from tests.conftest import blob_volume, write_nifti
    from uda_core.engine.events import PreviewEvent
    from uda_core.runs.adapt import run_adaptation

    targets = [write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume(seed=i)) for i in range(2)]
    control = RunControl()
    control.preview_index = 1
    events = []
    run_adaptation(tiny_bundle_path, "tent", targets, tmp_path / "run", listeners=[events.append],
                   control=control, engine_settings={"steps": 4, "batch_size": 2,
                                                     "preview_every": 2, "score_every": 2})
    previews = [(e.step, e.volume_index) for e in events if isinstance(e, PreviewEvent)]
    assert previews == [(0, 0), (0, 1), (2, 1), (4, 1)]
    first = next(e for e in events if isinstance(e, PreviewEvent))
    assert first.input_labels.shape == blob_volume().shape
    assert first.input_labels.dtype == np.uint8 and first.labels.ndim == 3
