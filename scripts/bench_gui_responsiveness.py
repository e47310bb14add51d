"""Does the GUI stay responsive while an adaptation trains on the worker thread?

Starts a QApplication with a small window, a 10 ms heartbeat QTimer on the GUI thread that
records the gap between its ticks, and runs one adaptation through app.worker.RunController
(the GUI's own path), with slots that update a label per step like a progress display would.
Then runs the same settings without Qt (`uda adapt` in a subprocess) and compares steps/s.
Prints the heartbeat gaps (p50/p99/max in ms, overall and per phase), steps/s of both, and a
markdown table row. Like the app, it calls app.worker.warm_up() first (--cold: not).
Needs a display:

    xvfb-run -a .venv/bin/python scripts/bench_gui_responsiveness.py --steps 60

Targets: the demo "protocol" shift (another T1w scanner), subjects 100-102; model
demo:brain-t1; method sfda. steps/s is the engine's own rate (steps over the engine's wall
time, scoring and previews included; reading data and writing masks excluded), as recorded in
run.json by both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = [ROOT / "resources" / "demo" / "protocol" / f"sub-{s}_protocol.nii.gz"
           for s in (100, 101, 102)]


def engine_settings(args) -> dict:
    return {"steps": args.steps, "batch_size": args.batch_size, "score_every": args.score_every,
            "preview_every": args.preview_every, "checkpoint_every": args.score_every}


def gap_stats(gaps_s: list[float]) -> dict:
    """p50, p99 and max of heartbeat gaps, in ms (NaN when there are none)."""
    if not gaps_s:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    ms = np.asarray(gaps_s) * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()), "n": len(ms)}


def run_in_gui(args, out_dir: Path) -> dict:
    """One run through RunController with a 10 ms heartbeat; gaps grouped by phase."""
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication, QLabel, QVBoxLayout, QWidget

    from app.worker import RunController, RunRequest

    app = QApplication.instance() or QApplication(sys.argv)
    window = QWidget()
    layout = QVBoxLayout(window)
    step_label, status_label = QLabel("step –"), QLabel("idle")
    layout.addWidget(step_label)
    layout.addWidget(status_label)
    window.show()

    phase = {"name": "starting"}
    gaps: dict[str, list[float]] = {}
    last_tick = [None]

    def tick():
        now = time.perf_counter()
        if last_tick[0] is not None:
            gaps.setdefault(phase["name"], []).append(now - last_tick[0])
        last_tick[0] = now

    def on_status(text: str):
        status_label.setText(text)
        phase["name"] = text

    def on_step(event):
        step_label.setText(f"step {event.step}/{event.total}: "
                           + ", ".join(f"{k} {v:.4f}" for k, v in event.losses.items()))

    counts = {"previews": 0}
    outcome = {}
    controller = RunController()
    controller.status.connect(on_status)
    controller.stepped.connect(on_step)
    controller.previewed.connect(lambda e: counts.__setitem__("previews", counts["previews"] + 1))
    controller.finished.connect(lambda summary: (outcome.update(summary=summary), app.quit()))
    controller.failed.connect(lambda msg, tb: (outcome.update(error=msg + "\n" + tb),
                                               app.quit()))
    heartbeat = QTimer()
    heartbeat.setTimerType(Qt.PreciseTimer)
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(tick)

    request = RunRequest(model="demo:brain-t1", method="sfda",
                         targets=[str(t) for t in TARGETS], out_dir=str(out_dir),
                         engine_settings=engine_settings(args), device="cpu", overwrite=True,
                         threads=args.threads or None)
    started = time.perf_counter()
    heartbeat.start()
    controller.start(request)
    app.exec()
    heartbeat.stop()
    wall = time.perf_counter() - started
    if "error" in outcome:
        raise SystemExit(f"the GUI run failed: {outcome['error']}")
    summary = outcome["summary"]
    every = [g for phase_gaps in gaps.values() for g in phase_gaps]
    return {"summary": summary, "wall_s": wall, "all_gaps": every,
            "by_phase": {name: gap_stats(g) for name, g in gaps.items()},
            "previews": counts["previews"]}


def run_without_qt(args, out_dir: Path) -> dict:
    """The same settings through `uda adapt` in a subprocess (no Qt at all)."""
    config = out_dir.parent / "cli_settings.json"
    config.write_text(json.dumps({"engine": engine_settings(args)}))
    command = [sys.executable, "-m", "uda_core.cli", "adapt", "--model", "demo:brain-t1",
               "--method", "sfda", "--out", str(out_dir), "--config", str(config),
               "--device", "cpu", "--overwrite", *[str(t) for t in TARGETS]]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    return {"summary": json.loads((out_dir / "run.json").read_text()), "wall_s": wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--score-every", type=int, default=20)
    parser.add_argument("--preview-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1,
                        help="GUI and CLI runs, alternated; steps/s is the median")
    parser.add_argument("--cold", action="store_true",
                        help="skip app.worker.warm_up(): the first run then imports torch's "
                             "compiler stack and matplotlib while the heartbeat runs")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for both runs (0: torch's default)")
    args = parser.parse_args(argv)
    import torch
    if args.threads:  # the GUI run sets it through RunRequest.threads
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the `uda adapt` subprocess's
    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()[0]
    if not args.cold:
        from app.worker import warm_up
        warm_up()  # as the app does at start-up
    guis, clis = [], []
    with tempfile.TemporaryDirectory(prefix="uda_gui_bench_") as tmp:
        for k in range(args.repeats):  # alternate, so that a change in load hits both
            guis.append(run_in_gui(args, Path(tmp) / f"gui{k}"))
            clis.append(run_without_qt(args, Path(tmp) / f"cli{k}"))
            print(f"repeat {k + 1}: GUI {guis[-1]['summary']['steps_per_second']:.3f}, "
                  f"CLI {clis[-1]['summary']['steps_per_second']:.3f} steps/s", flush=True)
    gui_rate = float(np.median([g["summary"]["steps_per_second"] for g in guis]))
    cli_rate = float(np.median([c["summary"]["steps_per_second"] for c in clis]))
    gui, cli = guis[-1], clis[-1]
    gaps = gap_stats([g for run in guis for g in run["all_gaps"]])
    print(f"torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}, 1-min load "
          f"average before {load_before:.1f}, after {os.getloadavg()[0]:.1f}")
    print(f"settings: {json.dumps(engine_settings(args))}, previews shown: {gui['previews']}, "
          f"warm-up: {'no' if args.cold else 'yes'}")
    print("heartbeat gaps by phase, last GUI run (ms):")
    for name, stats in gui["by_phase"].items():
        print(f"  {name:<40} n={stats['n']:<6} p50 {stats['p50']:6.1f}  p99 {stats['p99']:6.1f}"
              f"  max {stats['max']:7.1f}")
    print(f"GUI run: {gui_rate:.3f} steps/s (engine, median), {gui['wall_s']:.1f} s wall; "
          f"`uda adapt`: {cli_rate:.3f} steps/s, {cli['wall_s']:.1f} s wall (last run)")
    print()
    print("| steps | runs | heartbeat p50 (ms) | p99 (ms) | max (ms) | GUI steps/s "
          "| CLI steps/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.steps} | {args.repeats} | {gaps['p50']:.1f} | {gaps['p99']:.1f} "
          f"| {gaps['max']:.1f} | {gui_rate:.3f} | {cli_rate:.3f} | {gui_rate / cli_rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
