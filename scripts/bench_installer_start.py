"""Cold start of an installed `uda-studio`, watched from outside (BENCHMARKS.md, "Installer").

    python scripts/bench_installer_start.py LAUNCHER [--repeats N] [--title "UDA Studio 0.1.0"]

Needs an X display (DISPLAY) and `xwininfo` (x11-utils). Each repeat runs two fresh processes
with their own empty HOME (no napari settings, no caches):

- window: `LAUNCHER`, timed from the launch to the moment the window titled TITLE is mapped
  and viewable (polled every 50 ms with `xwininfo -name`), then killed;
- demo: `LAUNCHER --demo --method adabn --steps 3 --out DIR --exit-when-done`, timed to the
  moment DIR exists, and to its exit. The scripted demo presses Start as soon as the demo
  data are loaded (the first possible Start); the run creates DIR once it has read the model
  and scans, so this time is an upper bound of the first possible Start.

Prints one line per measurement and the medians. "Cold" means a new process and an empty HOME;
the operating system's file cache is warm after the first repeat (dropping it needs root and
a quiet machine; the first repeat is printed on its own).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

POLL_S = 0.05


def _env(home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UDA_RESOURCES")}
    return {**env, "HOME": home}


def _window_viewable(title: str) -> bool:
    out = subprocess.run(["xwininfo", "-name", title], capture_output=True, text=True)
    return out.returncode == 0 and "IsViewable" in out.stdout


def time_to_window(launcher: str, title: str, timeout: float) -> float:
    with tempfile.TemporaryDirectory() as home:
        t0 = time.perf_counter()
        proc = subprocess.Popen([launcher], env=_env(home), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - t0 < timeout:
                if _window_viewable(title):
                    return time.perf_counter() - t0
                if proc.poll() is not None:
                    raise SystemExit(f"{launcher} exited {proc.returncode} before its window "
                                     "showed")
                time.sleep(POLL_S)
            raise SystemExit(f"no window titled {title!r} within {timeout:.0f} s")
        finally:
            proc.kill()
            proc.wait()


def time_to_demo_start(launcher: str, timeout: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as home:
        out = Path(home) / "run"
        t0 = time.perf_counter()
        proc = subprocess.Popen([launcher, "--demo", "--method", "adabn", "--steps", "3",
                                 "--out", str(out), "--exit-when-done"], env=_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = None
        while time.perf_counter() - t0 < timeout:
            if started is None and out.is_dir():
                started = time.perf_counter() - t0
            if proc.poll() is not None:
                break
            time.sleep(POLL_S)
        else:
            proc.kill()
            raise SystemExit(f"the demo did not finish within {timeout:.0f} s")
        if proc.returncode != 0 or started is None:
            raise SystemExit(f"the demo exited {proc.returncode} (run started: {started})")
        return started, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("launcher")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--title", default="UDA Studio 0.1.0")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    windows, starts, exits = [], [], []
    for i in range(args.repeats):
        windows.append(time_to_window(args.launcher, args.title, args.timeout))
        start, end = time_to_demo_start(args.launcher, args.timeout)
        starts.append(start)
        exits.append(end)
        print(f"repeat {i + 1}: window shown {windows[-1]:.1f} s; demo: Start {start:.1f} s, "
              f"run done and exited {end:.1f} s", flush=True)
    print(f"median of {args.repeats}: window shown {statistics.median(windows):.1f} s; demo "
          f"Start {statistics.median(starts):.1f} s; demo exited {statistics.median(exits):.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
