"""Steps/s of the desktop app against `uda adapt`, same settings, run side by side.

Each repeat runs, one after the other (so both see the same machine load):
  app: `python -m app.main --demo protocol --method sfda --steps N --exit-when-done` (the real
       napari window with the panel, curves and layers; needs a display, e.g. xvfb-run)
  cli: `uda adapt` on the same targets and reference labels with the app's engine settings
       (the panel's preview interval included, so both compute the same previews)
and reads steps/s and torch threads from each run's run.json (the engine's rate: steps over
the engine's wall time, scoring and previews included, reading and writing excluded).

    xvfb-run -a .venv/bin/python scripts/bench_app_speed.py --steps 40 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's app and uda_core, not an installed copy


def app_engine_settings() -> dict:
    """What the panel sends the engine for a demo run: EngineConfig's form defaults and the
    panel's preview interval."""
    from app.segmentation.panel import GUI_PREVIEW_EVERY
    return {"preview_every": GUI_PREVIEW_EVERY}


def run_app(out: Path, steps: int, home: Path) -> dict:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "app.main", "--demo", "protocol", "--method", "sfda",
                    "--steps", str(steps), "--out", str(out), "--exit-when-done"],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=3600)
    return json.loads((out / "run.json").read_text())


def run_cli(out: Path, steps: int, config: Path) -> dict:
    from uda_core.synth.demo_files import demo_set
    demo = demo_set("protocol")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "uda_core.cli", "adapt", "--model", "demo:brain-t1",
                    "--method", "sfda", "--steps", str(steps), "--config", str(config),
                    "--out", str(out), "--reference", *map(str, demo.reference), "--",
                    *map(str, demo.targets)],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=3600)
    return json.loads((out / "run.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="uda-app-speed-"))
    config = work / "config.json"
    config.write_text(json.dumps({"engine": app_engine_settings()}))
    rates: dict[str, list[float]] = {"app": [], "cli": []}
    for repeat in range(args.repeats):
        for kind in ("app", "cli") if repeat % 2 == 0 else ("cli", "app"):
            out = work / f"{kind}-{repeat}"
            load = os.getloadavg()[0]
            started = time.perf_counter()
            summary = (run_app(out, args.steps, work / "home") if kind == "app"
                       else run_cli(out, args.steps, config))
            rates[kind].append(summary["steps_per_second"])
            print(f"{kind} repeat {repeat}: {summary['steps_per_second']:.3f} steps/s, "
                  f"threads {summary.get('threads')}, wall {time.perf_counter() - started:.0f} s, "
                  f"1-min load {load:.1f}", flush=True)
    app, cli = statistics.median(rates["app"]), statistics.median(rates["cli"])
    print(f"median steps/s: app {app:.3f}, uda adapt {cli:.3f}, ratio {app / cli:.2f} "
          f"({args.repeats} repeats, {args.steps} steps, CPUs {os.cpu_count()})")
    print(f"| sfda, demo protocol, {args.steps} steps | {app:.3f} | {cli:.3f} | "
          f"{app / cli:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
