"""Fault injection for `uda adapt`, `uda reg adapt` and `uda predict`: kill, inspect, finish,
compare. Used by tests/faults/test_kill.py and scripts/fault_table.py.

A *scenario* is one small command (tiny network, tiny data, fixed seed) with its output folder.
A *kill point* is either a write moment (the N-th write the command makes under its output
folder, tests/faults/kill_child.py) or a time (SIGKILL from outside after T seconds). For each:

1. run the command in a child process and SIGKILL it at the point;
2. inspect what it left: every file at its final name must load completely (bundles, checkpoints
   with torch.load(weights_only=True), NIfTI volumes read to the last voxel, JSON, every line of
   metrics.jsonl, the report image); hidden temporaries of io.atomic are counted apart (the
   next run clears them);
3. finish the work in this process: `--resume OUT/checkpoints/last.pt` when the run left a
   checkpoint, else the same command again (adapt); the same command with --skip-existing
   (predict: the masks the killed run completed are kept, the others written);
4. compare with an uninterrupted run of the same command: the same weights bit for bit, the
   same masks voxel for voxel, the same metrics rows (wall times aside) and run summary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from uda_core.cli import main as uda
from uda_core.io.atomic import TEMPORARY_NAME

CHILD = Path(__file__).with_name("kill_child.py")
REPO = Path(__file__).resolve().parents[2]
#: run.json entries that depend on the clock or the machine, not on the result
CLOCK_KEYS = ("seconds", "steps_per_second")


@dataclass
class Scenario:
    """One command: argv with OUT in place of the output folder, run under `root`."""

    name: str
    argv: list[str]
    root: Path
    kind: str              # "adapt" (resumable) or "predict"

    def args(self, out: Path) -> list[str]:
        return [str(out) if a == "OUT" else a for a in self.argv]


@dataclass
class Outcome:
    point: str                       # "write 17: replace checkpoints/last.pt" or "time 3.2 s"
    killed: bool                     # the child died by SIGKILL (not: finished before it)
    torn: list[str] = field(default_factory=list)         # files that do not load
    temporaries: list[str] = field(default_factory=list)  # hidden leftovers (allowed)
    how: str = ""                    # "resume" / "rerun" / "skip-existing"
    kept: int = 0                    # predict: masks of the killed run --skip-existing kept
    finished: bool = False           # the finishing command exited 0
    equal: bool = False              # ... and its result equals the uninterrupted one
    difference: str = ""


def _child_env(out: Path) -> dict[str, str]:
    env = dict(os.environ, FAULT_OUT=str(out), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    return env


def run_child(scenario: Scenario, out: Path, spec: str, log: Path,
              kill_after_s: float | None = None, timeout_s: float = 300) -> int:
    """Run the scenario's command in a child; returns its exit status (-9: killed)."""
    cmd = [sys.executable, str(CHILD), spec, str(log), "--", *scenario.args(out)]
    process = subprocess.Popen(cmd, cwd=scenario.root, env=_child_env(out),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if kill_after_s is not None:
            try:
                return process.wait(kill_after_s)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
        return process.wait(timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def census(scenario: Scenario, out: Path) -> tuple[list[str], float]:
    """Every write moment of an uninterrupted child run, and its wall time (s)."""
    log = out.with_name(out.name + ".log")
    started = time.perf_counter()
    code = run_child(scenario, out, "count", log)
    seconds = time.perf_counter() - started
    if code != 0:
        raise AssertionError(f"{scenario.name}: the uninterrupted child run failed ({code})")
    return log.read_text().splitlines(), seconds


# --- what a killed run left ------------------------------------------------------------------

def _loads(path: Path) -> str | None:
    """None when `path` is complete and loadable, else why not."""
    name = path.name
    try:
        if name.endswith(".pt"):
            content = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(content, dict) or "format" not in content:
                return "no format record"
        elif name.endswith((".nii.gz", ".nii")):
            np.asarray(nib.load(path).dataobj)
        elif name.endswith(".jsonl"):
            text = path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):
                return "torn last line"
            for line in text.splitlines():
                json.loads(line)
        elif name.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith(".png"):
            from PIL import Image
            with Image.open(path) as image:
                image.load()
        else:
            path.read_bytes().decode("utf-8")
    except Exception as exc:  # noqa: BLE001 - any failure to load is a torn file
        return f"{type(exc).__name__}: {exc}"
    return None


def inspect(out: Path) -> tuple[list[str], list[str]]:
    """(torn files with the reason, hidden temporaries) under `out`."""
    torn, temporaries = [], []
    if not out.exists():
        return torn, temporaries
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = str(path.relative_to(out))
        if TEMPORARY_NAME.match(path.name):
            temporaries.append(relative)
        elif (why := _loads(path)) is not None:
            torn.append(f"{relative} ({why})")
    return torn, temporaries


# --- finishing the work and comparing ----------------------------------------------------------

def finish(scenario: Scenario, out: Path) -> tuple[str, int]:
    """Finish a killed run's work in this process: (how, exit status)."""
    argv = scenario.args(out)
    if scenario.kind == "adapt":
        last = out / "checkpoints" / "last.pt"
        if last.is_file():
            return "resume", _quiet(uda, [*argv, "--resume", str(last)])
        return "rerun", _quiet(uda, argv)
    return "skip-existing", _quiet(uda, [argv[0], "--skip-existing", *argv[1:]])


def kept_masks(out: Path) -> int:
    """How many inputs the finishing `uda predict --skip-existing` left as the killed run had
    written them (rows "skipped" of OUT/predict_summary.csv)."""
    import csv
    summary = out / "predict_summary.csv"
    if not summary.is_file():
        return 0
    with open(summary, newline="", encoding="utf-8") as handle:
        return sum(row.get("status") == "skipped" for row in csv.DictReader(handle))


def _quiet(function, argv: list[str]) -> int:
    """Run `uda argv` in this process with its stdout/stderr sent to /dev/null."""
    import contextlib
    import io
    cwd = os.getcwd()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(io.StringIO()):
        try:
            return function(argv)
        finally:
            os.chdir(cwd)


def result_of(out: Path) -> dict:
    """What must not depend on an interruption: weights, masks, metrics rows, run summary."""
    result: dict = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = str(path.relative_to(out))
        if relative == "adapted.pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
            result[relative] = {k: v.clone() for k, v in content["state_dict"].items()}
        elif relative.endswith(".nii.gz"):
            image = nib.load(path)
            result[relative] = (np.asarray(image.dataobj).copy(), image.affine.copy())
        elif relative == "metrics.jsonl":
            rows = [json.loads(x) for x in path.read_text().splitlines()]
            result[relative] = [{k: v for k, v in r.items() if k != "time_s"} for r in rows]
        elif relative == "run.json":   # paths inside named as OUT/...
            run = json.loads(path.read_text().replace(json.dumps(str(out))[1:-1], "OUT"))
            result[relative] = {k: v for k, v in run.items() if k not in CLOCK_KEYS}
    return result


def difference(expected: dict, got: dict) -> str:
    """'' when equal (exactly), else the first difference in words."""
    if set(expected) != set(got):
        return f"files differ: {sorted(set(expected) ^ set(got))}"
    for name, want in expected.items():
        have = got[name]
        if name == "adapted.pt":
            for key, tensor in want.items():
                if key not in have or not torch.equal(tensor, have[key]):
                    return f"{name}: weight {key} differs"
        elif name.endswith(".nii.gz"):
            if not (np.array_equal(want[0], have[0]) and np.array_equal(want[1], have[1])):
                return f"{name}: voxels or affine differ"
        elif want != have:
            return f"{name} differs"
    return ""


def try_point(scenario: Scenario, out: Path, reference: dict, *, write: str | None = None,
              after_s: float | None = None) -> Outcome:
    """Kill the scenario at a write moment (kill_child's SPEC: "N" or "LINE#N") or after a
    time, inspect what is left, finish the work, compare with `reference`."""
    log = out.with_name(out.name + ".log")
    if write is not None:
        code = run_child(scenario, out, write, log)
        lines = log.read_text().splitlines()
        point = f"write {len(lines)}: {lines[-1] if lines else '?'}"
    else:
        point = f"time {after_s:.2f} s"
        code = run_child(scenario, out, "count", log, kill_after_s=after_s)
    outcome = Outcome(point, killed=code == -signal.SIGKILL)
    outcome.torn, outcome.temporaries = inspect(out)
    outcome.how, status = finish(scenario, out)
    outcome.finished = status == 0
    if scenario.kind == "predict":
        outcome.kept = kept_masks(out)
    if outcome.finished:
        _, left = inspect(out)
        outcome.difference = difference(reference, result_of(out))
        if left:
            outcome.difference = f"temporaries left after finishing: {left}"
        outcome.equal = not outcome.difference
    else:
        outcome.difference = f"finishing exited {status}"
    return outcome


def reference_result(scenario: Scenario, out: Path) -> dict:
    """The uninterrupted run's result (in this process, as the finishing runs are)."""
    status = _quiet(uda, scenario.args(out))
    if status != 0:
        raise AssertionError(f"{scenario.name}: the uninterrupted run exited {status}")
    return result_of(out)


# --- the three scenarios ----------------------------------------------------------------------

def make_scenarios(root: Path) -> dict[str, Scenario]:
    """Tiny data and models under `root`; the three commands."""
    sys.path.insert(0, str(REPO))
    from tests.conftest import blob_volume, make_reg_bundle, make_seg_bundle, write_nifti
    from uda_core.models.bundle import save_bundle

    root.mkdir(parents=True, exist_ok=True)
    seg = save_bundle(make_seg_bundle(), root / "tiny.pt", overwrite=True)
    reg = save_bundle(make_reg_bundle(), root / "tiny_reg.pt", overwrite=True)
    targets = [write_nifti(root / f"t{k}.nii.gz", blob_volume(seed=k)) for k in range(3)]
    config = root / "engine.json"
    config.write_text(json.dumps({"engine": {"steps": 12, "score_every": 4,
                                             "checkpoint_every": 4, "batch_size": 2,
                                             "score_slices": 8, "seed": 0}}))
    reg_config = root / "reg_engine.json"
    reg_config.write_text(json.dumps({"engine": {"steps": 4, "score_every": 2,
                                                 "checkpoint_every": 2, "score_slices": 4,
                                                 "seed": 0}}))
    return {
        "adapt": Scenario("uda adapt", [
            "adapt", "--model", str(seg), "--method", "tent", "--out", "OUT", "--config",
            str(config), "--device", "cpu", *targets[:2]], root, "adapt"),
        "reg adapt": Scenario("uda reg adapt", [
            "reg", "adapt", "--model", str(reg), "--discrepancy", "l1", "--out", "OUT",
            "--config", str(reg_config), "--device", "cpu"], root, "adapt"),
        # --workers 0: every write in the process the harness watches (worker processes of a
        # cohort write through the same atomic helpers)
        "predict": Scenario("uda predict", [
            "predict", "--model", str(seg), "--out", "OUT", "--device", "cpu", "--workers", "0",
            *targets], root, "predict"),
    }


#: (scenario, every n-th write moment, timed kills): 30 + 15 + 24 kill points at present
CAMPAIGN = (("adapt", 3, 6), ("reg adapt", 4, 3), ("predict", 1, 2))


def campaign(scenario: Scenario, work: Path, every: int, timed: int,
             seed: int = 16) -> list[Outcome]:
    """Kill `scenario` at every `every`-th write moment of an uninterrupted run and at `timed`
    random times (seeded) within its wall time; one Outcome per kill point."""
    slug = scenario.name.replace(" ", "-")
    moments, seconds = census(scenario, work / f"{slug}-census")
    reference = reference_result(scenario, work / f"{slug}-reference")
    rng = np.random.default_rng(seed)
    points: list[dict] = [{"write": str(n)} for n in range(1, len(moments) + 1, every)]
    points += [{"after_s": float(t)} for t in rng.uniform(0.5, seconds, timed)]
    return [try_point(scenario, work / f"{slug}-{k}", reference, **point)
            for k, point in enumerate(points)]
