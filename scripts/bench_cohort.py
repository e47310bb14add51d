"""Benchmarks of issue 15 (cohorts): predict throughput and memory, adaptation memory with
many targets, data-parallel steps/s.

    .venv/bin/python scripts/bench_cohort.py predict --volumes 20 200 --workers 0 1 2
    .venv/bin/python scripts/bench_cohort.py adapt --targets 3 30 300 [--steps 10]
    .venv/bin/python scripts/bench_cohort.py ddp [--steps 20]

``--model`` (predict, adapt): another bundle, e.g. a 3D one; ``--extra``: more options of the
command (quote them: ``--extra=--no-mirroring``). Each row ends with the 1-minute load
average before and after it.

Each measurement runs the real command line in a fresh process (`python -m uda_core.cli`,
or torchrun for ddp) on copies of the demo volumes (resources/demo/protocol, 2 mm), and
samples the resident memory of that process and all its children every 50 ms: the peak of
their sum is "peak memory". One line per measurement (Markdown table rows) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DEMO = sorted((ROOT / "resources" / "demo" / "protocol").glob("sub-*_protocol.nii.gz"))
CLI = [sys.executable, "-m", "uda_core.cli"]


def cohort(folder: Path, n: int) -> Path:
    """N copies of the demo scans (cycled) in FOLDER/in."""
    target = folder / f"in{n}"
    target.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shutil.copyfile(DEMO[i % len(DEMO)], target / f"vol{i:04d}.nii.gz")
    return target


def load() -> str:
    """The 1-minute load average now (the machine is shared: record it beside each time)."""
    return f"{os.getloadavg()[0]:.1f}"


def measure(command: list[str], masks: Path | None = None) -> tuple[float, float, int]:
    """(seconds, peak MiB of the process tree, exit status) of `command`; with `masks` (an
    output folder), a progress line on stderr every minute: masks written, peak so far."""
    start = time.perf_counter()
    process = psutil.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    peak, said = 0, start
    while process.poll() is None:
        if masks is not None and time.perf_counter() - said > 60:
            said = time.perf_counter()
            done = len(list(masks.glob("*_seg.nii.gz"))) if masks.is_dir() else 0
            sys.stderr.write(f"  {said - start:.0f} s: {done} masks, peak {peak / 2**20:.0f} "
                             f"MiB, load {load()}\n")
            sys.stderr.flush()
        try:
            tree = [process, *process.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if process.returncode:
        sys.stderr.write(process.stderr.read().decode()[-2000:] if process.stderr else "")
    return seconds, peak / 2**20, process.returncode


def bench_predict(args: argparse.Namespace, work: Path) -> None:
    print("| model | volumes | workers | seconds | volumes/min | peak memory MiB | load |",
          flush=True)
    print("|---|---|---|---|---|---|---|")
    for n in args.volumes:
        folder = cohort(work, n)
        for workers in args.workers:
            out = work / f"out{n}w{workers}"
            before = load()
            seconds, peak, code = measure([*CLI, "predict", "--model", args.model,
                                           "--device", "cpu", "--workers", str(workers),
                                           *args.extra, "--out", str(out), str(folder)],
                                          out)
            status = "" if code == 0 else f" (exit {code})"
            print(f"| {Path(args.model).name} | {n} | {workers} | {seconds:.1f} | "
                  f"{60 * n / seconds:.1f} | {peak:.0f}{status} | {before}-{load()} |",
                  flush=True)
            shutil.rmtree(out, ignore_errors=True)


def bench_adapt(args: argparse.Namespace, work: Path) -> None:
    print("| model | targets | streamed | seconds | peak memory MiB | load |", flush=True)
    print("|---|---|---|---|---|---|")
    for n in args.targets:
        folder = cohort(work, n)
        targets = sorted(str(p) for p in folder.iterdir())
        for stream in args.stream:
            out = work / f"adapt{n}{stream}"
            before = load()
            seconds, peak, code = measure([
                *CLI, "adapt", "--model", args.model, "--method", "tent", "--device",
                "cpu", "--steps", str(args.steps), "--no-masks", "--stream-targets", stream,
                *args.extra, "--out", str(out), *targets])
            status = "" if code == 0 else f" (exit {code})"
            print(f"| {Path(args.model).name} | {n} | {stream} | {seconds:.1f} | "
                  f"{peak:.0f}{status} | {before}-{load()} |", flush=True)
            shutil.rmtree(out, ignore_errors=True)


def bench_ddp(args: argparse.Namespace, work: Path) -> None:
    targets = [str(p) for p in DEMO]
    print("| processes | global batch | steps | steps/s (engine) | wall seconds | load |")
    print("|---|---|---|---|---|---|")
    for n in (1, 2):
        out = work / f"ddp{n}"
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc-per-node", str(n), "-m", "uda_core.cli"] if n > 1 else CLI)
        before = load()
        seconds, _, code = measure([
            *launcher, "adapt", "--model", "demo:brain-t1", "--method", "tent", "--device",
            "cpu", "--steps", str(args.steps), "--batch-size", "16", "--no-masks",
            "--out", str(out), *targets])
        rate = json.loads((out / "run.json").read_text())["steps_per_second"] if not code else 0
        print(f"| {n} | 16 | {args.steps} | {rate:.2f} | {seconds:.1f} | "
              f"{before}-{load()} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("predict")
    p.add_argument("--model", default="demo:brain-t1")
    p.add_argument("--extra", nargs="*", default=[], help="more `uda predict` options")
    p.add_argument("--volumes", type=int, nargs="+", default=[20, 200])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p = sub.add_parser("adapt")
    p.add_argument("--model", default="demo:brain-t1")
    p.add_argument("--extra", nargs="*", default=[], help="more `uda adapt` options")
    p.add_argument("--targets", type=int, nargs="+", default=[3, 30, 300])
    p.add_argument("--stream", nargs="+", default=["auto"], choices=["auto", "on", "off"])
    p.add_argument("--steps", type=int, default=10)
    p = sub.add_parser("ddp")
    p.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_cohort-"))
    try:
        {"predict": bench_predict, "adapt": bench_adapt, "ddp": bench_ddp}[args.what](args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
