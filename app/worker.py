"""The app's one threading mechanism: a callable on its own ``QThread``, reported by signals.

:class:`BackgroundCall` runs one callable on a new ``QThread`` and, once that thread has
ended, emits ``returned(result)`` or ``errored(exception)`` and then ``finished()`` on the GUI
thread; :func:`run_in_background` is the one-line form both panels use for short jobs
(reading volumes, saving results) and for a registration. :class:`RunController` is built on
it for the long job, one adaptation: it owns the run's :class:`~uda_core.engine.RunControl`
(stop, pause, resume, which target to preview) and re-emits each engine event of
:func:`uda_core.runs.adapt.run_adaptation` (or of a registration adaptation,
:func:`uda_core.runs.adapt_registration.run_reg_adaptation`: a request's ``execute``) as a
signal. Events hold plain numbers and numpy
arrays (never device tensors), so they cross threads as they are; Qt queues each emission to
the receiver's thread, so every widget slot runs on the GUI thread and no background thread
touches a layer or a widget.

Why QThread and not superqt's ``create_worker`` (which the data box and the registration
panel used before; napari's own wrapper of it mishandles a worker's error in napari 0.9):
a long run needs a thread of its own that can be waited for (closing the window stops the
run, then waits for its checkpoint to be written), and results are delivered only after the
thread has ended, so ``is_running`` is already False in a result's slot and the next job may
start from it. superqt's workers share Qt's global thread pool (as many threads as cores: two
here), where a registration would hold a slot that a file read then waits for, and a worker
cannot be waited for on its own. One mechanism also means one set of rules: results and
errors arrive on the GUI thread, in that order, then ``finished``.

Why this module is ``app.worker`` and not ``app.threading``: ``python app/main.py`` puts
``app/`` first on ``sys.path``, where a module named ``threading`` would hide the standard
library's.

Rate: a small model on a GPU makes 10+ steps a second, hence 10+ ``stepped`` emissions a
second. Qt delivers those cheaply; a slot that redraws a plot should redraw at its own pace
(e.g. keep the newest values and repaint on a timer) rather than per step.

The GIL: torch kernels release it, but the Python around them (the engine loop, listeners,
data sampling) holds it, and the interpreter hands it to the GUI thread at least every
``sys.getswitchinterval()`` (5 ms). The listener here does nothing but emit, so the worker's
share of GIL time stays small. What does stall the GUI thread is one long call that holds the
GIL: an import (torch imports its compiler stack when the first optimiser is built, 1-2 s;
the report imports matplotlib) or a full garbage collection (0.2-0.5 s). Hence
:func:`warm_up` at start-up and only a young-generation collection after a successful run.
scripts/bench_gui_responsiveness.py measures what the GUI thread feels (10 ms heartbeat:
p99 17-21 ms, max 40 ms once warmed up, on 2 busy CPU cores).

CPU threads: torch's default is one OpenMP thread per core, and OpenMP threads that lose
their core to other work stall each other (on 2 cores busy with other processes, an sfda step
of the demo model at batch 4 took 5.4 s with 2 threads and 0.23 s with 1). On a machine with
few cores, ``RunRequest.threads`` = cores - 1 leaves one for the GUI thread.
"""

from __future__ import annotations

import datetime as _dt
import gc
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from qtpy.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot

from uda_core.engine import RunControl
from uda_core.engine.events import (
    CheckpointEvent,
    FinishedEvent,
    PreviewEvent,
    RegPreviewEvent,
    RollbackEvent,
    ScoreEvent,
    StepEvent,
)
from uda_core.errors import RunCancelled, UdaError
from uda_core.runs.adapt import run_adaptation

logger = logging.getLogger(__name__)

#: Where runs get their own folder unless the user chose one (both panels).
DEFAULT_RUNS_DIR = Path.home() / "UDA-Studio" / "runs"
_ACTIVE: set[BackgroundCall] = set()   # started and not yet delivered: kept alive here
_QUIT_HOOKED: list[bool] = []          # whether aboutToQuit waits for _ACTIVE yet


class _CallWorker(QObject):
    """Lives on the background thread: calls the callable once, emits what came of it."""

    returned = Signal(object)
    errored = Signal(object)
    done = Signal()   # the very last emission, whatever happened

    def __init__(self, fn: Callable[..., Any], args: tuple):
        super().__init__()
        self._call: tuple | None = (fn, args)

    @Slot()
    def run(self) -> None:
        fn, args = self._call or (None, ())
        self._call = None   # nothing of the job outlives it here
        try:
            result = fn(*args)
        except Exception as exc:  # delivered to the GUI thread, traceback attached
            self.errored.emit(exc)
        else:
            self.returned.emit(result)
        finally:
            fn = args = result = None
            self.done.emit()


class BackgroundCall(QObject):
    """``fn(*args)`` once, on a ``QThread`` of its own; create and use it on the GUI thread.

    Signals (all emitted on the GUI thread, after the thread has ended, so ``is_running`` is
    already False in their slots): exactly one of ``returned(result)`` and
    ``errored(exception)``, then ``finished()``. The exception keeps its ``__traceback__``.
    """

    returned = Signal(object)
    errored = Signal(object)
    finished = Signal()

    def __init__(self, fn: Callable[..., Any], *args, name: str = "uda-background",
                 parent: QObject | None = None):
        super().__init__(parent)
        self._job: tuple | None = (fn, args)
        self._name = name
        self._thread: QThread | None = None
        self._worker: _CallWorker | None = None
        self._outcome: tuple | None = None   # (signal, args) to emit when the thread ends

    @property
    def is_running(self) -> bool:
        """True from start() until ``finished`` has been emitted."""
        return self._thread is not None

    def start(self) -> None:
        if self._job is None:
            raise RuntimeError("a BackgroundCall runs once")
        fn, args = self._job
        self._job = None
        _wait_for_calls_on_quit()
        worker = _CallWorker(fn, args)
        worker.returned.connect(self._keep_returned)   # queued: background -> GUI
        worker.errored.connect(self._keep_errored)
        thread = QThread()
        thread.setObjectName(self._name)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # quit from the background thread itself (QThread.quit is thread-safe): a queued
        # quit would wait for the GUI event loop, which wait() blocks
        worker.done.connect(thread.quit, Qt.DirectConnection)
        thread.finished.connect(worker.deleteLater)   # runs as the thread ends
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        _ACTIVE.add(self)
        thread.start()

    def wait(self, timeout_ms: int | None = 30000) -> bool:
        """Block until the thread has ended (None: however long it takes); True if it has
        (or none was started). The signals it queued are delivered afterwards by the event
        loop, if one still runs."""
        thread = self._thread
        if thread is None:
            return True
        return thread.wait() if timeout_ms is None else thread.wait(int(timeout_ms))

    @Slot(object)
    def _keep_returned(self, result) -> None:
        self._outcome = (self.returned, (result,))

    @Slot(object)
    def _keep_errored(self, exc) -> None:
        self._outcome = (self.errored, (exc,))

    @Slot()
    def _on_thread_finished(self) -> None:
        thread = self._thread
        if thread is not None:
            thread.wait()   # returns at once: the thread's last act was emitting finished
            thread.deleteLater()
        self._thread = self._worker = None
        # let go of it once this event is handled: not while Qt is still inside its handler
        QTimer.singleShot(0, lambda: _ACTIVE.discard(self))
        outcome = self._outcome or (
            self.errored, (RuntimeError("the background job ended without a result"),))
        self._outcome = None
        signal, args = outcome
        signal.emit(*args)
        self.finished.emit()


def run_in_background(fn: Callable[..., Any], *args,
                      on_returned: Callable[[Any], None] | None = None,
                      on_errored: Callable[[Exception], None] | None = None,
                      on_finished: Callable[[], None] | None = None,
                      name: str = "uda-background") -> BackgroundCall:
    """Start ``fn(*args)`` on its own thread; the callbacks run on the GUI thread, in the
    order returned-or-errored, finished. Without ``on_errored`` an error is logged with its
    traceback. Call on the GUI thread; returns the started :class:`BackgroundCall`."""
    call = BackgroundCall(fn, *args, name=name)
    if on_returned is not None:
        call.returned.connect(on_returned)
    call.errored.connect(on_errored if on_errored is not None else _log_error)
    if on_finished is not None:
        call.finished.connect(on_finished)
    call.start()
    return call


def _log_error(exc: Exception) -> None:
    logger.error("a background job failed: %s: %s", type(exc).__name__, exc, exc_info=exc)


def _wait_for_calls_on_quit() -> None:
    """Once: when the application quits, wait for the jobs still running (as Qt waits for
    its global thread pool), so no ``QThread`` is destroyed while its thread runs."""
    app = QCoreApplication.instance()
    if _QUIT_HOOKED or app is None:
        return
    _QUIT_HOOKED.append(True)
    app.aboutToQuit.connect(wait_for_background_calls)


def wait_for_background_calls(timeout_ms: int | None = None) -> bool:
    """Block until every started :class:`BackgroundCall`'s thread has ended (None: no time
    limit, each); True when they all have."""
    return all(call.wait(timeout_ms) for call in list(_ACTIVE))


@dataclass
class RunRequest:
    """Everything one adaptation run needs: the arguments of ``run_adaptation``."""

    model: str                      # bundle path or built-in name ("demo:brain-t1")
    method: str                     # "sfda", "tent", "adabn", "ddm", "adaptsegnet", "early"
    targets: list[str]              # unlabelled target volumes
    out_dir: str | PathLike         # run folder (adapted.pt, metrics.jsonl, run.json, ...)
    paired: list[str] | None = None     # ddm: a source-modality image per target
    source: list[str] | None = None     # labelled source volumes or folders
    reference: list[str] | None = None  # labels per target, for reporting Dice only
    method_settings: dict = field(default_factory=dict)
    engine_settings: dict = field(default_factory=dict)  # steps, batch_size, preview_every...
    device: str = "auto"            # "auto", "cpu" or "cuda"
    overwrite: bool = False         # replace an existing OUT/adapted.pt
    standardise: bool = False       # match intensities to the source's first
    threads: int | None = None      # torch CPU threads: torch.set_num_threads on the worker
                                    # thread (torch also starts later threads with it); None:
                                    # leave torch's setting as it is

    def execute(self, listeners, control: RunControl) -> dict:
        """The run itself (on the worker's thread): ``run_adaptation``; returns its summary.
        Any request with ``execute(listeners, control)`` and ``threads`` runs on the worker
        (the registration panel's :class:`app.registration.adapt.RegAdaptRequest` does)."""
        return run_adaptation(
            self.model, self.method, self.targets, self.out_dir, paired=self.paired,
            source=self.source, reference=self.reference,
            method_settings=self.method_settings, engine_settings=self.engine_settings,
            device=self.device, listeners=listeners, control=control,
            overwrite=self.overwrite, standardise=self.standardise)


class AdaptationWorker(QObject):
    """Runs one request in whichever thread calls ``run()``; reports through signals only
    (emitted from that thread; Qt queues them to receivers living on other threads).

    Exactly one of ``finished``, ``stopped`` and ``failed`` is emitted, last, at the end of
    ``run()``: ``stopped`` when Stop came before the first step (nothing was adapted).
    """

    stepped = Signal(object)        # StepEvent
    scored = Signal(object)         # ScoreEvent
    previewed = Signal(object)      # PreviewEvent (segmentation) or RegPreviewEvent
    checkpointed = Signal(object)   # CheckpointEvent
    rolled_back = Signal(object)    # RollbackEvent
    finished = Signal(dict)         # run summary (run.json), incl. "report": {"png", "md"}
    failed = Signal(str, str)       # one-line message, traceback text ("" for a UdaError)
    stopped = Signal(str)           # Stop before the first step: what was being done
    status = Signal(str)            # short human message ("Loading data…", ...)
    done = Signal()                 # the very last emission of run(), whatever happened

    def __init__(self, request: RunRequest, control: RunControl):
        super().__init__()
        self.request = request
        self.control = control
        self._adapting = False
        self._signal_for = {StepEvent: self.stepped, ScoreEvent: self.scored,
                            PreviewEvent: self.previewed, RegPreviewEvent: self.previewed,
                            CheckpointEvent: self.checkpointed,
                            RollbackEvent: self.rolled_back}

    def on_event(self, event) -> None:
        """The engine listener (called on the worker thread): one emission per event."""
        if not self._adapting:  # the first event comes once the data are ready
            self._adapting = True
            self.status.emit("Adapting…")
        if isinstance(event, FinishedEvent):
            self.status.emit(getattr(self.request, "finishing_message",
                                     "Writing the model, masks and report…"))
            return
        signal = self._signal_for.get(type(event))
        if signal is not None:
            signal.emit(event)

    @Slot()
    def run(self) -> None:
        request = self.request
        self.status.emit("Loading data…")
        failed = True
        try:
            if request.threads:
                torch.set_num_threads(int(request.threads))
            summary = request.execute([self.on_event], self.control)
        except RunCancelled as exc:   # its frames may hold the volumes: a full collection
            self.stopped.emit(str(exc))
        except UdaError as exc:
            logger.info("adaptation refused: %s", exc)
            self.failed.emit(str(exc), "")
        except Exception as exc:  # anything else is a bug: keep the traceback for the user
            logger.exception("adaptation failed")
            self.failed.emit(*bug_report(exc))
        else:
            failed = False
            self.status.emit(f"Finished: {summary['status']}")
            self.finished.emit(summary)
        finally:
            release_memory(full=failed)
            self.done.emit()


def warm_up() -> None:
    """Do now what a first run would do lazily while holding the GIL (each stalls the GUI
    thread 0.2-0.4 s, measured): torch imports its compiler stack (torch._dynamo, sympy;
    1-2 s in all) when the first optimiser is built, and the report imports matplotlib.
    Call once at start-up (e.g. behind the splash screen), on any thread."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def release_memory(full: bool = True) -> None:
    """Free what a run left behind: Python garbage and, with CUDA, torch's cached blocks.

    A full collection walks every object in the process holding the GIL, so it freezes the
    GUI thread for as long (0.2-0.5 s measured with Qt, torch and matplotlib loaded; more
    with napari). It is needed after a failure, when the traceback's frames may keep the
    run's volumes and tensors alive in reference cycles. After a successful run reference
    counting has already freed them (a full collection then found about 7,000 small objects,
    mostly the report figure's artists, and no array or tensor), so only the two young
    generations are collected (about 1 ms).
    """
    gc.collect(2 if full else 1)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bug_report(exc: BaseException) -> tuple[str, str]:
    """(one line "TypeName: first line of the message", the traceback text) for a bug."""
    first_line = next(iter(str(exc).splitlines()), "")
    return f"{type(exc).__name__}: {first_line}", "".join(traceback.format_exception(exc))


class RunController(QObject):
    """One adaptation at a time on a :class:`BackgroundCall`; create and use it on the GUI
    thread.

    Re-emits the worker's signals (connect widgets once, to the controller), always on the
    GUI thread. ``finished`` / ``failed`` come after the run's thread has ended, so
    ``is_running`` is already False in their slots and a new run may start from them.
    """

    stepped = Signal(object)        # StepEvent
    scored = Signal(object)         # ScoreEvent
    previewed = Signal(object)      # PreviewEvent
    checkpointed = Signal(object)   # CheckpointEvent
    rolled_back = Signal(object)    # RollbackEvent
    finished = Signal(dict)         # run summary, incl. "report": {"png": path, "md": path}
    failed = Signal(str, str)       # one-line message, traceback text ("" for a UdaError)
    stopped = Signal(str)           # Stop before the first step: nothing adapted or written
    status = Signal(str)            # short human message
    running_changed = Signal(bool)  # True at start, False once the run's thread has ended

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._call: BackgroundCall | None = None
        self._worker: AdaptationWorker | None = None
        self._control: RunControl | None = None
        self._outcome: tuple | None = None   # (signal, args) to emit when the thread ends
        self._preview_index = 0

    @property
    def is_running(self) -> bool:
        return self._call is not None

    @property
    def is_paused(self) -> bool:
        return self._control is not None and self._control.paused

    def start(self, request: RunRequest) -> None:
        """Start `request` on a new thread; RuntimeError while a run is going."""
        if self.is_running:
            raise RuntimeError("a run is already going; stop it or wait for it to finish")
        self._control = RunControl()
        self._control.preview_index = self._preview_index
        self._outcome = None
        # the worker stays on this (GUI) thread and emits from the run's thread, so every
        # connection below is queued: run thread -> GUI thread, in emission order
        worker = AdaptationWorker(request, self._control)
        for name in ("stepped", "scored", "previewed", "checkpointed", "rolled_back",
                     "status"):
            getattr(worker, name).connect(getattr(self, name))
        worker.finished.connect(self._keep_finished)
        worker.failed.connect(self._keep_failed)
        worker.stopped.connect(self._keep_stopped)
        call = BackgroundCall(worker.run, name="uda-adaptation")
        call.errored.connect(self._keep_bug)     # only if run() itself broke
        call.finished.connect(self._on_run_ended)
        self._call, self._worker = call, worker
        call.start()
        self.running_changed.emit(True)

    def stop(self) -> None:
        """Cancel. Before the first step the run ends at its next cancellation point (within
        about a second: between files, between batches of slices) and ``stopped`` follows;
        after it the engine stops before its next step and still writes checkpoints/last.pt,
        best.pt and adapted.pt (from the best weights so far), and ``finished`` follows with
        status "cancelled"."""
        if self._control is not None:
            self._control.cancel()

    def pause(self) -> None:
        """Hold the run before its next step (the step under way completes)."""
        if self._control is not None:
            self._control.pause()

    def resume(self) -> None:
        if self._control is not None:
            self._control.resume()

    def set_preview_index(self, index: int) -> None:
        """Which target (index into the request's targets) the next previews show; kept for
        later runs too."""
        self._preview_index = int(index)
        if self._control is not None:
            self._control.preview_index = int(index)

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the run's thread has ended (e.g. after stop() when the window closes);
        True if it has (or none was running). The signals it queued, ``finished`` included,
        are delivered afterwards by the event loop, if one still runs."""
        call = self._call
        return call is None or call.wait(timeout_ms)

    @Slot(dict)
    def _keep_finished(self, summary: dict) -> None:
        self._outcome = (self.finished, (summary,))

    @Slot(str, str)
    def _keep_failed(self, message: str, details: str) -> None:
        self._outcome = (self.failed, (message, details))

    @Slot(str)
    def _keep_stopped(self, message: str) -> None:
        self._outcome = (self.stopped, (message,))

    @Slot(object)
    def _keep_bug(self, exc: Exception) -> None:
        self._outcome = (self.failed, bug_report(exc))

    @Slot()
    def _on_run_ended(self) -> None:
        self._call = self._worker = self._control = None
        outcome = self._outcome or (self.failed, ("the run ended without a result", ""))
        self._outcome = None
        self.running_changed.emit(False)
        signal, args = outcome
        signal.emit(*args)


def new_run_dir(method: str, root: Path = DEFAULT_RUNS_DIR) -> Path:
    """A fresh folder name for one run (nothing there yet): <root>/<date-time>-<method>."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{stamp}-{method}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stamp}-{method}-{n}"
    return candidate


def format_eta(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
