"""Listeners: callables that receive every engine event (see :mod:`uda_core.engine.events`).

The metrics writer lives here; console progress is the CLI's (uda_core.cli.common) and the
GUI's listener turns events into Qt signals (app/worker.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uda_core.engine.events import EngineEvent, ResumedEvent, RollbackEvent, ScoreEvent, StepEvent
from uda_core.io.atomic import atomic_output, output_error

#: What the engine calls with each event.
Listener = Callable[[EngineEvent], None]


class MetricsWriter:
    """Listener writing one JSON line per step, per scoring and per rollback to metrics.jsonl
    (``loss/<term>``, ``score/<name>``, ``reference/<name>``, ``time_s`` in seconds).

    A resumed run (``append``) keeps, at its ResumedEvent, only the complete lines up to the
    checkpoint's step: the lines that a killed run wrote after its last checkpoint (and a torn
    last line) are dropped, so that the file ends as an uninterrupted run's would. A full disk
    or read-only folder is raised as OutputError naming the folder (a file handle's OSError
    carries no file name)."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        self.handle = open(path, "a" if append else "w", buffering=1, encoding="utf-8")

    def _keep_through(self, step: int) -> None:
        self.handle.close()
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                row = json.loads(line) if line.endswith("\n") else None
            except ValueError:
                row = None
            if isinstance(row, dict) and int(row.get("step", step + 1)) <= step:
                kept.append(line)
        with atomic_output(self.path, overwrite=True) as tmp:
            tmp.write_text("".join(kept), encoding="utf-8")
        self.handle = open(self.path, "a", buffering=1, encoding="utf-8")

    def __call__(self, event: EngineEvent) -> None:
        row: dict[str, Any]
        if isinstance(event, ResumedEvent):
            self._keep_through(event.step)
            return
        if isinstance(event, StepEvent):
            row = {"step": event.step, "time_s": round(event.elapsed_s, 3),
                   **{f"loss/{k}": v for k, v in event.losses.items()}}
        elif isinstance(event, ScoreEvent):
            row = {"step": event.step, **{f"score/{k}": v for k, v in event.scores.items()},
                   "selection": event.selection, "best": event.is_best}
            if event.reference:
                row.update({f"reference/{k}": v for k, v in event.reference.items()})
        elif isinstance(event, RollbackEvent):
            row = {"step": event.step, "rollback_to": event.to_step, "reason": event.reason}
        else:
            return
        try:
            self.handle.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise output_error(exc, self.path.parent) or exc from exc

    def close(self) -> None:
        try:
            self.handle.close()
        except OSError as exc:   # the line that could not be written, flushed again
            raise output_error(exc, self.path.parent) or exc from exc
