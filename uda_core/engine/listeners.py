"""Listeners: callables that receive every engine event (see :mod:`uda_core.engine.events`).

The metrics writer lives here; console progress is the CLI's (uda_core.cli.common) and the
GUI's listener turns events into Qt signals (app/worker.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uda_core.engine.events import EngineEvent, RollbackEvent, ScoreEvent, StepEvent

#: What the engine calls with each event.
Listener = Callable[[EngineEvent], None]


class MetricsWriter:
    """Listener writing one JSON line per step, per scoring and per rollback to metrics.jsonl
    (``loss/<term>``, ``score/<name>``, ``reference/<name>``, ``time_s`` in seconds)."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.handle = open(path, "a" if append else "w", buffering=1, encoding="utf-8")

    def __call__(self, event: EngineEvent) -> None:
        row: dict[str, Any]
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
        self.handle.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.handle.close()
