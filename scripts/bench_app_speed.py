"""Steps/s of the desktop app against `uda adapt`, same settings, run side by side.

Each repeat runs, one after the other (so both see the same machine load):
  app: `python -m app.main --demo protocol --method sfda --steps N --exit-when-done` (the real
       napari window with the panel, curves and layers; needs a display, e.g. xvfb-run)
  cli: `uda adapt` on the same targets and reference labels with the app's engine settings
       (the panel's preview interval included, so both compute the same previews)
  app@BASE (with --baseline BASE): the app of another checkout (e.g. the commit before a fix)
and reads steps/s and torch threads from each run's run.json (the engine's rate: steps over
the engine's wall time, scoring and previews included, reading and writing excluded). For an
app run it also reports the CPU seconds of the window's threads (the GUI thread and Mesa's
llvmpipe threads, which composite the window under Xvfb) against those of the run's threads,
read from /proc five times a second while it runs, for the whole process and within the
engine's timed window (from metrics.jsonl's creation to checkpoints/last.pt's).

    xvfb-run -a .venv/bin/python scripts/bench_app_speed.py --steps 60 --repeats 3

(about 7 minutes on a quiet 2-core machine.)
"""

from __future__ import annotations

import argparse
import collections
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


def thread_cpu(pid: int, seen: dict[int, tuple[str, float]]) -> None:
    """Update `seen` {thread id: (kind, CPU seconds so far, user + system)} with `pid`'s
    threads. Kinds: "gui" (the main thread), "llvmpipe" (Mesa's rendering threads), "other"
    (the run's thread, its OpenMP threads, Qt's and napari's helpers)."""
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:   # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        kind = ("gui" if int(tid) == pid else "llvmpipe" if name.startswith("llvmpipe")
                else "other")
        seen[int(tid)] = (kind, (int(fields[11]) + int(fields[12])) / tick)


def window_cpu(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds by thread kind between two `thread_cpu` readings (threads started in
    between count from 0)."""
    cpu: dict[str, float] = collections.defaultdict(float)
    for tid, (kind, seconds) in after.items():
        cpu[kind] += seconds - before.get(tid, (kind, 0.0))[1]
    return dict(cpu)


def run_app(out: Path, steps: int, home: Path, root: Path = ROOT) -> dict:
    """One app run; its run.json with "cpu" (CPU s by thread kind, whole process) and
    "window_cpu" (the same within the engine's timed work: from metrics.jsonl's creation,
    just before the engine starts, to the last checkpoint's, just after its last step)."""
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(root)}
    with subprocess.Popen([sys.executable, "-m", "app.main", "--demo", "protocol", "--method",
                           "sfda", "--steps", str(steps), "--out", str(out),
                           "--exit-when-done"], env=env, cwd=root,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as app:
        seen: dict[int, tuple[str, float]] = {}   # threads that ended keep their last reading
        marks: dict[str, dict] = {}   # "start", "end": copies of `seen` at the window's ends
        deadline = time.monotonic() + 3600
        while app.poll() is None and time.monotonic() < deadline:
            try:
                thread_cpu(app.pid, seen)
            except OSError:   # the app has just quit
                pass
            for mark, path in (("start", out / "metrics.jsonl"),
                               ("end", out / "checkpoints" / "last.pt")):
                if mark not in marks and path.exists():
                    marks[mark] = dict(seen)
            time.sleep(0.2)
        if app.poll() is None:
            app.kill()
        stderr = app.stderr.read().decode(errors="replace") if app.stderr else ""
    if app.returncode != 0:
        raise SystemExit(f"the app failed ({app.returncode}): {stderr[-2000:]}")
    summary = json.loads((out / "run.json").read_text())
    summary["cpu"] = window_cpu({}, seen)
    if len(marks) == 2:
        summary["window_cpu"] = window_cpu(marks["start"], marks["end"])
    return summary


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
    parser.add_argument("--baseline", type=Path, metavar="ROOT",
                        help="also run the app of this checkout (e.g. `git archive` of the "
                             "commit before a change), interleaved with the others")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="uda-app-speed-"))
    config = work / "config.json"
    config.write_text(json.dumps({"engine": app_engine_settings()}))
    kinds = ["app", "cli"] + (["app@baseline"] if args.baseline else [])
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    for repeat in range(args.repeats):
        for kind in kinds if repeat % 2 == 0 else kinds[::-1]:
            out = work / f"{kind.replace('@', '-')}-{repeat}"
            load = os.getloadavg()[0]
            started = time.perf_counter()
            summary = (run_app(out, args.steps, work / "home") if kind == "app" else
                       run_app(out, args.steps, work / "home", args.baseline.resolve())
                       if kind == "app@baseline" else run_cli(out, args.steps, config))
            rates[kind].append(summary["steps_per_second"])
            cpu = summary.get("cpu")
            threads_cpu = "".join(
                f", {label} CPU s: GUI thread {c.get('gui', 0):.1f}, llvmpipe "
                f"{c.get('llvmpipe', 0):.1f}, others {c.get('other', 0):.1f}"
                for label, c in (("process", cpu), ("timed window", summary.get("window_cpu")))
                if c)
            print(f"{kind} repeat {repeat}: {summary['steps_per_second']:.3f} steps/s, "
                  f"threads {summary.get('threads')}, wall {time.perf_counter() - started:.0f} s, "
                  f"1-min load {load:.1f}{threads_cpu}", flush=True)
    medians = {kind: statistics.median(values) for kind, values in rates.items()}
    cli = medians["cli"]
    print("median steps/s: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items())
          + f" ({args.repeats} repeats, {args.steps} steps, CPUs {os.cpu_count()})")
    for kind in kinds:
        if kind != "cli":
            print(f"| sfda, demo protocol, {args.steps} steps, {kind} | {medians[kind]:.3f} | "
                  f"{cli:.3f} | {medians[kind] / cli:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
