"""Start, Pause/Resume and Stop, the device, the output folder, a time estimate before Start,
progress with ETA, status.

The estimate divides the steps by the speed (steps/s) of the last run of the same method on
the same device, recorded in SPEEDS_FILE after each run (so it survives a restart); before
any run there is no figure to divide by, and it says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from uda_core.exports.json_file import write_json_atomic

from ..worker import DEFAULT_RUNS_DIR, format_eta, new_run_dir

__all__ = ["DEFAULT_RUNS_DIR", "RunBox", "format_eta", "new_run_dir"]

#: {"<method>@<device>": steps per second of its last run}
SPEEDS_FILE = DEFAULT_RUNS_DIR / "speeds.json"


def _speeds(path: Path) -> dict:
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def recorded_speed(method: str, device: str, path: Path | None = None) -> float | None:
    """Steps/s of the last recorded run of `method` on `device`, or None."""
    value = _speeds(path or SPEEDS_FILE).get(f"{method}@{device}")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def record_speed(method: str, device: str, steps_per_second: float,
                 path: Path | None = None) -> None:
    """Keep a finished run's speed for the next estimate (best effort: an unwritable home
    folder only loses the estimate)."""
    if not steps_per_second > 0:
        return
    path = Path(path or SPEEDS_FILE)
    speeds = _speeds(path)
    speeds[f"{method}@{device}"] = round(float(steps_per_second), 4)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, speeds)
    except OSError:
        pass


def estimate_text(steps: int, steps_per_second: float | None) -> str:
    """"About 4:10 for 300 steps (1.2 steps/s in the last run)", or why there is none."""
    if steps_per_second is None:
        return (f"{steps} step{'s' * (steps != 1)}; time: known after the first run of this "
                "method here (the progress bar shows the time left)")
    return (f"About {format_eta(steps / steps_per_second)} for {steps} step{'s' * (steps != 1)} "
            f"({steps_per_second:.2g} steps/s in the last run of this method here)")


class RunBox(QGroupBox):
    start_clicked = Signal()
    pause_clicked = Signal(bool)   # True: pause, False: resume
    stop_clicked = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("4  Run", parent)
        self.device = QComboBox()
        self.device.addItems(["auto", "cuda", "cpu"])
        self.device.setToolTip("auto: the GPU when there is one, else the CPU")
        self.out_dir = QLineEdit()
        self.out_dir.setPlaceholderText(f"a new folder under {DEFAULT_RUNS_DIR}")
        self.out_dir.setToolTip("Where the run writes adapted.pt, masks/, metrics, report and "
                                "checkpoints. Leave empty for a new folder per run.")
        browse = QPushButton("…")
        browse.setMaximumWidth(28)
        browse.clicked.connect(self._ask_dir)
        self.start = QPushButton("Start")
        self.start.setStyleSheet("font-weight: bold")
        self.pause = QPushButton("Pause")
        self.pause.setCheckable(True)
        self.stop = QPushButton("Stop")
        self.start.clicked.connect(self.start_clicked)
        self.pause.toggled.connect(self._on_pause)
        self.stop.clicked.connect(self.stop_clicked)
        self.progress = QProgressBar()
        self.progress.setFormat("ready")
        self.progress.setValue(0)
        self.estimate = QLabel()
        self.estimate.setWordWrap(True)
        self.status = QLabel("Load a model and target volumes, then press Start.")
        self.status.setWordWrap(True)
        device_row = QHBoxLayout()
        device_row.addWidget(QLabel("Device"))
        device_row.addWidget(self.device)
        device_row.addWidget(QLabel("Output"))
        device_row.addWidget(self.out_dir, 1)
        device_row.addWidget(browse)
        buttons = QHBoxLayout()
        for button in (self.start, self.pause, self.stop):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(device_row)
        layout.addLayout(buttons)
        layout.addWidget(self.estimate)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.set_running(False)

    def set_running(self, running: bool) -> None:
        self.start.setEnabled(not running)
        self.pause.setEnabled(running)
        self.stop.setEnabled(running)
        self.device.setEnabled(not running)
        self.out_dir.setEnabled(not running)
        if not running:
            self.pause.blockSignals(True)
            self.pause.setChecked(False)
            self.pause.setText("Pause")
            self.pause.blockSignals(False)

    def reset_progress(self, text: str = "loading data…") -> None:
        """A new run: no step yet (the previous run's "step N / N" must not linger)."""
        self.progress.setMaximum(1)
        self.progress.setValue(0)
        self.progress.setFormat(text)

    def show_progress(self, step: int, total: int, elapsed_s: float) -> None:
        """Step and ETA on the bar, drawn with the window's next repaint: QProgressBar's
        setValue repaints the bar at once otherwise, a repaint of its own (composited on the
        CPU with the napari canvas; BENCHMARKS.md, issue 17)."""
        bar = self.progress
        bar.setUpdatesEnabled(False)
        try:
            bar.setMaximum(max(total, 1))
            bar.setValue(step)
            eta = elapsed_s / max(step, 1) * (total - step)
            bar.setFormat(f"step %v / %m   ETA {format_eta(eta)}")
        finally:
            bar.setUpdatesEnabled(True)   # schedules one repaint

    def show_estimate(self, steps: int, method: str) -> None:
        device = self.device.currentText()
        self.estimate.setText(f"<small>{estimate_text(int(steps), recorded_speed(method, device))}"
                              "</small>")

    def output_dir(self, method: str) -> Path:
        text = self.out_dir.text().strip()
        return Path(text).expanduser() if text else new_run_dir(method)

    def _on_pause(self, paused: bool) -> None:
        self.pause.setText("Resume" if paused else "Pause")
        self.pause_clicked.emit(paused)

    def _ask_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for this run's results")
        if folder:
            self.out_dir.setText(folder)
