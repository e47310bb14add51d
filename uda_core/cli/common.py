"""What every `uda` command shares: exit codes, progress on stderr, settings files, subject
lists, the console listener of adaptation runs and the first-Ctrl-C cancel.

Rules: errors the user can fix print one line on stderr naming the file and the problem and
exit with EXIT_USER_ERROR (no traceback unless --debug); the first Ctrl-C of an adaptation
run cancels it cleanly after the current step (checkpoint kept, exit EXIT_CANCELLED), a
second one interrupts at once; Ctrl-C elsewhere exits with EXIT_CANCELLED, leaving no
half-written file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uda_core.errors import InputError

if TYPE_CHECKING:  # the engine (and torch) load only when a run starts
    from uda_core.engine.events import EngineEvent

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_CANCELLED = 130


DEVICE_HELP = ("where the network runs; auto uses a CUDA GPU (or Apple MPS) when there is "
               "one, else the CPU (default: auto)")


def add_device(parser: argparse.ArgumentParser, help_text: str = DEVICE_HELP) -> None:
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help=help_text)


def progress_bar(total: int | None, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr (disabled when stderr is not a terminal)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                leave=False, disable=None)


def say(text: str) -> None:
    print(text, file=sys.stderr)


def note(bar: Any, text: str) -> None:
    """A line on stderr that does not tear the progress bar `bar` (may be None)."""
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        say(text)


def read_settings(path: str | None) -> dict:
    """Settings file: JSON or TOML with method settings at the top level and engine settings
    (steps, batch_size, seed, select_by, ...) under "engine"."""
    if not path:
        return {}
    text_path = Path(path)
    if not text_path.is_file():
        raise InputError("does not exist", text_path)
    try:
        if text_path.suffix.lower() == ".toml":
            import tomllib
            settings = tomllib.loads(text_path.read_text(encoding="utf-8"))
        else:
            settings = json.loads(text_path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise InputError(f"is not valid {text_path.suffix.lstrip('.').upper() or 'JSON'}: "
                         f"{exc}", text_path) from exc
    if not isinstance(settings, dict):
        raise InputError(f"holds a {type(settings).__name__}, not a table of settings "
                         '(e.g. {"lr": 1e-5, "engine": {"steps": 100}})', text_path)
    if not isinstance(settings.get("engine", {}), dict):
        raise InputError('its "engine" entry must be a table of engine settings (e.g. '
                         '{"steps": 100}), not ' + repr(settings["engine"]), text_path)
    return settings


def engine_settings_from(settings: dict, args: argparse.Namespace,
                         keys: tuple[str, ...]) -> dict:
    """The "engine" table of a settings file (removed from `settings`), overridden by the
    command-line flags `keys` that were given."""
    engine = dict(settings.pop("engine", {}))
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            engine[key] = value
    return engine


def subject_range(text: str) -> list[int]:
    """'100-102' -> [100, 101, 102]; '3,7' -> [3, 7]; 'none' or '' -> []."""
    if text.strip().lower() in ("", "none"):
        return []
    subjects: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                subjects.extend(range(int(lo), int(hi) + 1))
            else:
                subjects.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a subject list: {text!r} (e.g. 0-11,20-27 or "
                                         "none)") from None
    return subjects


class ConsoleProgress:
    """Listener of an adaptation run: a progress bar with the losses (a plain line every 25
    steps when stderr is no terminal), a line per scoring and rollback, the final status."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None  # a tqdm bar from the first step on
        self.interactive = sys.stderr.isatty()

    def __call__(self, event: EngineEvent) -> None:
        from uda_core.engine.events import FinishedEvent, RollbackEvent, ScoreEvent, StepEvent
        if isinstance(event, StepEvent):
            if self.bar is None:
                self.bar = progress_bar(event.total, self.desc, "step")
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in event.losses.items()},
                                 refresh=False)
            self.bar.update(1)
            if not self.interactive and (event.step % 25 == 0 or event.step == event.total):
                losses = ", ".join(f"{k} {v:.4f}" for k, v in event.losses.items())
                say(f"step {event.step}/{event.total} ({event.elapsed_s:.0f} s): {losses}")
        elif isinstance(event, ScoreEvent):
            text = ", ".join(f"{k} {v:.4f}" for k, v in event.scores.items())
            if event.reference:
                text += "; reference (evaluation only): " + ", ".join(
                    f"{k} {v:.4f}" for k, v in event.reference.items())
            note(self.bar, f"step {event.step} scores: {text}"
                           f"{'  (best)' if event.is_best else ''}")
        elif isinstance(event, RollbackEvent):
            note(self.bar, f"step {event.step}: {event.reason}; rolled back to step "
                           f"{event.to_step} and halved the learning rates")
        elif isinstance(event, FinishedEvent):
            if self.bar is not None:
                self.bar.close()
            say(f"{event.status}: {event.message}")


@contextlib.contextmanager
def cancel_on_interrupt(control: Any) -> Iterator[None]:
    """While inside: the first Ctrl-C calls ``control.cancel()`` (the engine stops after the
    current step and keeps its checkpoint); a second one raises KeyboardInterrupt at once.
    Outside the main thread (signals cannot be caught there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def first_interrupt(signum: int, frame: Any) -> None:
        control.cancel()
        signal.signal(signal.SIGINT, previous)
        say("\ncancelling after the current step (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, first_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def finish_adaptation(summary: dict, verb: str = "chose") -> int:
    """Print the adapted model line (stdout) and, for a cancelled run, how to resume."""
    outcome = summary.get("outcome") or (f"{verb} step {summary['chosen_step']} by "
                                         f"{summary['selected_by']}")
    print(f"{summary['adapted_model']}  ({summary['status']}, {summary['steps_done']} steps in "
          f"{summary['seconds']:.0f} s, {outcome})")
    for mask in summary.get("masks") or []:
        print(mask)
    if summary["status"] == "cancelled":
        say(f"resume with --resume {summary['checkpoint']}")
        return EXIT_CANCELLED
    return 0
