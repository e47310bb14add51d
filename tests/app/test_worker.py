"""app.worker: BackgroundCall (a callable on its own thread, its outcome on the GUI thread) and
RunController (a run on that thread: its signals on the GUI thread, stop, errors, pause)."""

from __future__ import annotations

import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest
import torch
from qtpy.QtCore import Qt, QThread
from qtpy.QtWidgets import QApplication

from app.worker import (
    AdaptationWorker,
    BackgroundCall,
    RunController,
    RunRequest,
    run_in_background,
)
from tests.conftest import blob_volume, write_nifti
from uda_core.engine import RunControl
from uda_core.engine.checkpoints import load_checkpoint
from uda_core.models.bundle import load_model

pytestmark = pytest.mark.gui

SIGNALS = ("stepped", "scored", "previewed", "checkpointed", "rolled_back", "finished",
           "failed", "stopped", "status", "running_changed")
TIMEOUT_MS = 60000


class Recorder:
    """Every emission of a controller's signals, and whether its slot ran on the GUI thread."""

    def __init__(self, controller: RunController):
        self.calls: list[tuple[str, tuple]] = []
        self.off_main_thread: list[str] = []
        for name in SIGNALS:
            getattr(controller, name).connect(self._slot(name))

    def _slot(self, name):
        def record(*args):
            if QThread.currentThread() != QApplication.instance().thread():
                self.off_main_thread.append(name)
            self.calls.append((name, args))
        return record

    def args(self, name: str) -> list[tuple]:
        return [args for called, args in self.calls if called == name]

    def events(self, name: str) -> list:
        return [args[0] for args in self.args(name)]


@pytest.fixture
def controller(qtbot):
    """A RunController that is stopped and waited for when the test ends, pass or fail."""
    ctrl = RunController()
    yield ctrl
    ctrl.stop()
    assert ctrl.wait(TIMEOUT_MS)


@pytest.fixture
def targets(tmp_path):
    return [write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume(seed=i)) for i in range(2)]


def make_request(model, targets, out_dir, **engine) -> RunRequest:
    settings = {"steps": 4, "batch_size": 2, "score_every": 2, "preview_every": 2, **engine}
    return RunRequest(model=str(model), method="tent", targets=targets, out_dir=str(out_dir),
                      engine_settings=settings, device="cpu")


def on_gui_thread() -> bool:
    return QThread.currentThread() == QApplication.instance().thread()


def test_a_background_call_runs_off_the_gui_thread_and_delivers_on_it(qtbot):
    ran_on_gui_thread, seen = [], []

    def job(a, b):
        ran_on_gui_thread.append(on_gui_thread())
        return a + b

    call = BackgroundCall(job, 2, 3)
    call.returned.connect(lambda value: seen.append(
        ("returned", value, on_gui_thread(), call.is_running)))
    call.errored.connect(lambda exc: seen.append(("errored", exc)))
    call.finished.connect(lambda: seen.append(("finished", on_gui_thread())))
    with qtbot.waitSignal(call.finished, timeout=TIMEOUT_MS):
        call.start()
        assert call.is_running
    assert ran_on_gui_thread == [False]
    assert seen == [("returned", 5, True, False), ("finished", True)]
    with pytest.raises(RuntimeError, match="once"):
        call.start()


def test_an_error_in_the_background_reaches_the_gui_thread_with_its_traceback(qtbot):
    def broken(path):
        raise ValueError(f"{path}: unreadable")

    seen = []
    call = run_in_background(broken, "x.nii", on_returned=seen.append,
                             on_errored=lambda exc: seen.append((exc, on_gui_thread())),
                             on_finished=lambda: seen.append("finished"))
    qtbot.waitUntil(lambda: "finished" in seen, timeout=TIMEOUT_MS)
    (exc, on_gui), finished = seen
    assert isinstance(exc, ValueError) and str(exc) == "x.nii: unreadable" and on_gui
    assert "in broken" in "".join(traceback.format_exception(exc))
    assert finished == "finished" and not call.is_running


def test_wait_blocks_until_the_thread_ends_and_the_outcome_follows(qtbot):
    release = threading.Event()
    call = run_in_background(release.wait, 10.0)
    assert not call.wait(50)   # still running: the job waits for the event
    release.set()
    assert call.wait(TIMEOUT_MS)   # no event loop runs meanwhile
    assert call.is_running         # ended, but the outcome is not delivered yet
    with qtbot.waitSignal(call.returned, timeout=TIMEOUT_MS) as blocker:
        pass
    assert blocker.args == [True] and not call.is_running


def test_a_run_reports_every_step_previews_and_finishes_on_the_gui_thread(
        qtbot, controller, targets, tiny_bundle_path, tmp_path):
    recorder = Recorder(controller)
    request = make_request(tiny_bundle_path, targets, tmp_path / "run")
    controller.set_preview_index(1)  # before the run: kept for it
    with qtbot.waitSignal(controller.finished, timeout=TIMEOUT_MS) as blocker:
        controller.start(request)
        assert controller.is_running
    summary = blocker.args[0]

    assert summary["status"] == "completed" and summary["steps_done"] == 4
    assert [e.step for e in recorder.events("stepped")] == [1, 2, 3, 4]
    previews = [(e.step, e.volume_index) for e in recorder.events("previewed")]
    assert previews == [(0, 0), (0, 1), (2, 1), (4, 1)]
    assert recorder.events("previewed")[0].input_labels.shape == blob_volume().shape
    assert [e.step for e in recorder.events("scored")] == [0, 2, 4]
    assert any(e.path.endswith("last.pt") for e in recorder.events("checkpointed"))
    assert (tmp_path / "run" / "adapted.pt").is_file()
    load_model(tmp_path / "run" / "adapted.pt")
    assert summary["report"]["png"].endswith("report.png")
    statuses = [args[0] for args in recorder.args("status")]
    assert statuses[:2] == ["Loading data…", "Adapting…"]
    assert recorder.args("running_changed") == [(True,), (False,)]
    assert recorder.args("failed") == []
    assert recorder.off_main_thread == []
    assert not controller.is_running


def test_stop_cancels_and_leaves_a_loadable_last_checkpoint(
        qtbot, controller, targets, tiny_bundle_path, tmp_path):
    recorder = Recorder(controller)
    controller.stepped.connect(lambda event: controller.stop())
    request = make_request(tiny_bundle_path, targets, tmp_path / "run", steps=500,
                           preview_every=0, score_every=0)
    with qtbot.waitSignal(controller.finished, timeout=TIMEOUT_MS) as blocker:
        controller.start(request)
    summary = blocker.args[0]

    assert summary["status"] == "cancelled" and 1 <= summary["steps_done"] < 500
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["step"] == summary["steps_done"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["step"] == 0
    assert (tmp_path / "run" / "adapted.pt").is_file()
    assert recorder.off_main_thread == []


def test_wait_after_stop_returns_once_the_thread_ends_as_when_the_window_closes(
        qtbot, controller, targets, tiny_bundle_path, tmp_path):
    request = make_request(tiny_bundle_path, targets, tmp_path / "run", steps=500,
                           preview_every=0, score_every=0)
    with qtbot.waitSignal(controller.stepped, timeout=TIMEOUT_MS):
        controller.start(request)
    controller.stop()
    assert controller.wait(TIMEOUT_MS)  # the GUI thread blocks: no event loop runs meanwhile
    with qtbot.waitSignal(controller.finished, timeout=TIMEOUT_MS) as blocker:
        pass  # queued while the GUI thread waited; delivered now
    assert blocker.args[0]["status"] == "cancelled"
    assert not controller.is_running


def test_an_error_is_one_line_naming_the_file_and_the_next_run_can_start(
        qtbot, controller, targets, tiny_bundle_path, tmp_path):
    recorder = Recorder(controller)
    missing = tmp_path / "no_such_model.pt"
    running_in_slot = []
    controller.failed.connect(lambda *args: running_in_slot.append(controller.is_running))
    with qtbot.waitSignal(controller.failed, timeout=TIMEOUT_MS) as blocker:
        controller.start(make_request(missing, targets, tmp_path / "bad"))
    message, details = blocker.args

    assert "\n" not in message and str(missing) in message and "not found" in message
    assert details == ""  # a UdaError is the user's to fix: no traceback
    assert running_in_slot == [False] and recorder.args("finished") == []

    with qtbot.waitSignal(controller.finished, timeout=TIMEOUT_MS) as blocker:
        controller.start(make_request(tiny_bundle_path, targets, tmp_path / "good"))
    assert blocker.args[0]["status"] == "completed"
    assert recorder.off_main_thread == []


def test_a_bug_is_reported_with_its_traceback(qtbot, controller, targets, tiny_bundle_path,
                                              tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug deep inside\nwith a second line")
    monkeypatch.setattr("app.worker.run_adaptation", broken)
    with qtbot.waitSignal(controller.failed, timeout=TIMEOUT_MS) as blocker:
        controller.start(make_request(tiny_bundle_path, targets, tmp_path / "run"))
    message, details = blocker.args
    assert message == "ZeroDivisionError: a bug deep inside"
    assert "Traceback (most recent call last)" in details and "in broken" in details


def test_start_is_refused_while_a_run_is_going(qtbot, controller, targets, tiny_bundle_path,
                                               tmp_path):
    with qtbot.waitSignal(controller.finished, timeout=TIMEOUT_MS):
        controller.start(make_request(tiny_bundle_path, targets, tmp_path / "a"))
        with pytest.raises(RuntimeError, match="already"):
            controller.start(make_request(tiny_bundle_path, targets, tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_pause_holds_the_run_before_its_first_step_and_resume_finishes_it(
        qtbot, controller, targets, tiny_bundle_path, tmp_path):
    recorder = Recorder(controller)
    controller.start(make_request(tiny_bundle_path, targets, tmp_path / "run"))
    controller.pause()  # before any step can run: the engine checks at the top of each step
    assert controller.is_paused
    qtbot.waitUntil(lambda: len(recorder.events("previewed")) == 2, timeout=TIMEOUT_MS)
    qtbot.wait(200)  # the engine is now at (or about to reach) its first pause check
    assert recorder.events("stepped") == [] and controller.is_running

    with qtbot.waitSignal(controller.finished, timeout=TIMEOUT_MS) as blocker:
        controller.resume()
    assert blocker.args[0]["status"] == "completed" and blocker.args[0]["steps_done"] == 4
    assert [e.step for e in recorder.events("stepped")] == [1, 2, 3, 4]
    assert not controller.is_paused


def test_threads_sets_torchs_cpu_threads_on_the_worker_thread(targets, tiny_bundle_path,
                                                               tmp_path):
    before = torch.get_num_threads()
    request = make_request(tiny_bundle_path, targets, tmp_path / "run", preview_every=0)
    request.threads = 1 if before != 1 else 2
    worker = AdaptationWorker(request, RunControl())  # here on a plain Python thread
    seen, outcome = [], []
    worker.stepped.connect(lambda event: seen.append(torch.get_num_threads()),
                           Qt.DirectConnection)
    worker.finished.connect(outcome.append, Qt.DirectConnection)
    thread = threading.Thread(target=worker.run)
    try:
        thread.start()
        thread.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [request.threads] * 4 and outcome[0]["status"] == "completed"


FIRST_RUN_IMPORTS = r"""
import sys
import app.worker
from tests.conftest import blob_volume, write_nifti
from uda_core.runs.adapt import run_adaptation
out, model = sys.argv[1], sys.argv[2]
app.worker.warm_up()
target = write_nifti(out + "/t.nii.gz", blob_volume())
before = set(sys.modules)
run_adaptation(model, "tent", [target], out + "/run", device="cpu",
               engine_settings={"steps": 2, "batch_size": 2, "preview_every": 1})
print("NEW:" + ",".join(sorted(set(sys.modules) - before)))
"""


def test_after_warm_up_a_first_run_imports_nothing_heavy(tmp_path, tiny_bundle_path):
    """Imports hold the GIL: done during a run they freeze the GUI thread (0.2-0.4 s)."""
    result = subprocess.run([sys.executable, "-c", FIRST_RUN_IMPORTS, str(tmp_path),
                             tiny_bundle_path], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    new = result.stdout.strip().splitlines()[-1].removeprefix("NEW:").split(",")
    heavy = [m for m in new if m.split(".")[0] in {"matplotlib", "sympy", "scipy"}
             or m.startswith(("torch._dynamo", "torch._inductor", "torch.fx"))]
    assert heavy == []


def test_stop_before_the_first_step_is_reported_as_stopped_and_writes_no_model(
        qtbot, controller, targets, tiny_bundle_path, tmp_path):
    recorder = Recorder(controller)
    with qtbot.waitSignal(controller.stopped, timeout=TIMEOUT_MS) as blocker:
        controller.start(make_request(tiny_bundle_path, targets, tmp_path / "run"))
        controller.stop()   # before the worker has read its first file
    assert blocker.args[0].startswith("stopped while reading t0.nii.gz")
    assert recorder.args("finished") == [] and recorder.args("failed") == []
    assert not (tmp_path / "run" / "adapted.pt").exists() and not controller.is_running
