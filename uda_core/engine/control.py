"""Cancel and pause of a run, safe to call from any thread (the GUI's Stop, the CLI's Ctrl-C).

Before the first step (reading and preparing the data, scoring step 0) a cancel ends the run
at the next cancellation point (:meth:`RunControl.check`, called at least once a second of
work there) with :class:`~uda_core.errors.RunCancelled`: nothing has been adapted, so no model
is written. From the first step on the engine honours a cancel between steps instead
and still writes its checkpoints and the best weights so far.
"""

from __future__ import annotations

import threading
import time

from uda_core.errors import RunCancelled


class RunControl:
    """Cancel and pause, safe to call from any thread."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self.preview_index = 0   # the target volume previews show (set by a viewer)
        self.abortable = True    # True until the engine's first step: check() raises

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

    def check(self, doing: str) -> None:
        """A cancellation point before the first step: RunCancelled ("stopped while
        <doing>...") once cancelled; nothing once the engine has started stepping."""
        if self.abortable and self._cancel.is_set():
            raise RunCancelled(f"stopped while {doing}, before any adaptation step: "
                               "nothing was adapted and no model was written")

    def wait_while_paused(self) -> float:
        """Block while paused; returns the seconds spent waiting."""
        if self._running.is_set():
            return 0.0
        start = time.perf_counter()
        self._running.wait()
        return time.perf_counter() - start
