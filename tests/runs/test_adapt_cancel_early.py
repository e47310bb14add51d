"""Stop before the first adaptation step ends the run at once: while reading the targets,
while scoring step 0, and (after the first step) no masks are written for a stopped run."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import blob_volume, write_nifti
from uda_core.engine import RunControl
from uda_core.engine.events import StepEvent
from uda_core.errors import RunCancelled
from uda_core.io import readers
from uda_core.runs.adapt import run_adaptation
from uda_core.tasks import segmentation_data


def _targets(tmp_path, n=3):
    return [write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume(seed=i)) for i in range(n)]


def test_stop_while_reading_ends_before_the_next_file(tmp_path, tiny_bundle_path,
                                                      monkeypatch):
    control = RunControl()
    read = []

    def reading(path):   # the user presses Stop while the first file is being read
        read.append(path)
        control.cancel()
        return readers.read_volume(path)

    monkeypatch.setattr(segmentation_data, "read_volume", reading)
    with pytest.raises(RunCancelled, match="stopped while preparing t0.nii.gz"):
        run_adaptation(tiny_bundle_path, "tent", _targets(tmp_path), tmp_path / "run",
                       engine_settings={"steps": 5, "batch_size": 2}, device="cpu",
                       control=control)
    assert len(read) == 1                                    # no other file was read
    assert not (tmp_path / "run" / "adapted.pt").exists()    # nothing adapted, no model


def test_stop_while_scoring_step_0_ends_within_a_batch(tmp_path, tiny_bundle_path,
                                                       monkeypatch):
    from uda_core.tasks.segmentation import SegmentationTask
    control = RunControl()
    batches = []
    original_init = SegmentationTask.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        network = self.network

        def forward(images):   # Stop arrives during the first batch of the first scoring
            batches.append(len(images))
            control.cancel()
            return network(images)

        self.network = forward

    monkeypatch.setattr(SegmentationTask, "__init__", init)
    steps = []
    with pytest.raises(RunCancelled, match="scoring the model before adaptation"):
        run_adaptation(tiny_bundle_path, "tent", _targets(tmp_path, 1), tmp_path / "run",
                       engine_settings={"steps": 5, "batch_size": 2}, device="cpu",
                       control=control,
                       listeners=[lambda e: isinstance(e, StepEvent) and steps.append(e)])
    assert len(batches) == 1 and not steps   # one batch of the first pass, then no more
    assert not (tmp_path / "run" / "adapted.pt").exists()


def test_a_stopped_run_keeps_its_model_and_writes_no_masks(tmp_path, tiny_bundle_path):
    control = RunControl()

    def stop_at_two(event):
        if isinstance(event, StepEvent) and event.step == 2:
            threading.Thread(target=control.cancel).start()

    summary = run_adaptation(tiny_bundle_path, "tent", _targets(tmp_path, 1), tmp_path / "run",
                             engine_settings={"steps": 50, "batch_size": 2, "score_every": 0},
                             device="cpu", control=control, listeners=[stop_at_two])
    assert summary["status"] == "cancelled" and summary["steps_done"] <= 3
    assert summary["masks"] == [] and not (tmp_path / "run" / "masks").exists()
    assert (tmp_path / "run" / "adapted.pt").is_file()


def test_the_command_line_says_a_stop_before_any_step_and_exits_130(tmp_path, capsys,
                                                                   tiny_bundle_path,
                                                                   monkeypatch):
    from uda_core.cli import main
    from uda_core.engine import control as control_module

    real_check = control_module.RunControl.check

    def cancelled_check(self, doing):
        self.cancel()
        real_check(self, doing)

    monkeypatch.setattr(control_module.RunControl, "check", cancelled_check)
    code = main(["adapt", "--model", tiny_bundle_path, "--method", "tent", "--out",
                 str(tmp_path / "run"), "--device", "cpu", *_targets(tmp_path, 1)])
    assert code == 130
    assert "stopped while reading t0.nii.gz" in capsys.readouterr().err
