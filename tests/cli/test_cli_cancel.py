"""The first Ctrl-C of `uda adapt` and `uda reg adapt` cancels cleanly: the run stops after the
current step, keeps its checkpoint and its best weights, exits 130 and says how to resume."""

from __future__ import annotations

import json
import signal

from tests.conftest import blob_volume, write_nifti
from uda_core.cli import common, main
from uda_core.engine import RunControl
from uda_core.engine.events import StepEvent
from uda_core.models.bundle import load_model


def _interrupt_at_step(monkeypatch, step: int) -> None:
    """Send SIGINT to this process when the console listener sees `step`."""
    original = common.ConsoleProgress.__call__

    def listener(self, event):
        original(self, event)
        if isinstance(event, StepEvent) and event.step == step:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(common.ConsoleProgress, "__call__", listener)


def test_first_ctrl_c_of_uda_adapt_cancels_after_the_step_and_keeps_a_checkpoint(
        tmp_path, capsys, monkeypatch, tiny_bundle_path):
    _interrupt_at_step(monkeypatch, 2)
    target = write_nifti(tmp_path / "t.nii.gz", blob_volume())
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)   # SIG_IGN when the tests run as a background job
    code = main(["adapt", "--model", tiny_bundle_path, "--method", "tent", "--out", str(out),
                 "--steps", "50", "--batch-size", "2", "--device", "cpu", target])
    err = capsys.readouterr().err
    assert code == 130, err
    assert "resume with --resume" in err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "cancelled" and run["steps_done"] == 2
    assert (out / "checkpoints" / "last.pt").is_file()
    load_model(out / "adapted.pt")  # a complete, loadable bundle
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored


def test_resume_after_a_cancel_finishes_the_run(tmp_path, capsys, monkeypatch,
                                                tiny_bundle_path):
    _interrupt_at_step(monkeypatch, 2)
    target = write_nifti(tmp_path / "t.nii.gz", blob_volume())
    out = tmp_path / "run"
    argv = ["adapt", "--model", tiny_bundle_path, "--method", "tent", "--out", str(out),
            "--steps", "4", "--batch-size", "2", "--device", "cpu", target]
    assert main(argv) == 130
    monkeypatch.undo()
    code = main([*argv, "--resume", str(out / "checkpoints" / "last.pt")])
    assert code == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["steps_done"] == 4


def test_cancel_on_interrupt_cancels_the_control_once_then_restores_the_handler():
    control = RunControl()
    before = signal.getsignal(signal.SIGINT)
    with common.cancel_on_interrupt(control):
        signal.raise_signal(signal.SIGINT)
        assert control.cancelled
        assert signal.getsignal(signal.SIGINT) is before  # a second Ctrl-C interrupts
    assert signal.getsignal(signal.SIGINT) is before
