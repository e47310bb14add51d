"""Adaptation runs on VALIDATION subjects (40-42) for choosing defaults and the checkpoint rule.

    .venv/bin/python scripts/validation_study.py --data DATA --out OUT [--jobs 2]
        [--subjects 40-45] [--model demo:brain-t1] RUN...

RUN is SHIFT:METHOD[+std][:JSON settings], e.g. ``protocol:sfda+std:{"lr":1e-5}``; "+std"
standardises the targets first (`uda adapt --standardise`). Each run is `run_adaptation` with
the targets' reference labels (Dice on the scored slices, for evaluation only), scoring every
25 steps and `select_by last`, so OUT/<name>/metrics.jsonl holds every label-free score beside
the reference Dice at each scoring; scripts/study_selection.py then compares checkpoint rules.
``--keep-steps`` also keeps the weights of every scoring step (OUT/<name>/steps/step_NNNN.pt,
copies of last.pt) for scores computed afterwards (scripts/study_checkpoint_scores.py).
``--hold-out-scored`` trains on every target slice except the engine's scored ones (the
engine itself trains on all), so the label-free scores are measured on slices held out of
training; its runs are named ...-heldout.
DATA holds `uda demo-data DATA --subjects 40-42 --domains t1,SHIFT,...` (or the subjects given
by --subjects: 40-45 are validation subjects too). Never point it at the benchmark's held-out
subjects (100+).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def keep_steps(out: Path):
    """A listener copying each last.pt the engine writes to steps/step_NNNN.pt."""
    import shutil

    from uda_core.engine.events import CheckpointEvent

    def listener(event) -> None:
        if isinstance(event, CheckpointEvent) and not event.is_best:
            (out / "steps").mkdir(exist_ok=True)
            shutil.copyfile(event.path, out / "steps" / f"step_{event.step:04d}.pt")
    return listener


def hold_out_scored_slices() -> None:
    """Make SegmentationTask train only on the slices it does not score (this process only)."""
    import numpy as np

    from uda_core.tasks.segmentation import SegmentationTask
    from uda_core.tasks.segmentation_data import SliceIndex
    original = SegmentationTask.__init__

    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        rng = np.random.default_rng(self.config.seed + 1)   # as _build_score_set draws them
        n = min(self.config.score_slices, len(self.pool.volume))
        keep = np.setdiff1d(np.arange(len(self.pool.volume)),
                            rng.choice(len(self.pool.volume), n, replace=False))
        self.pool = SliceIndex(self.pool.volume[keep], self.pool.slice[keep])
    SegmentationTask.__init__ = init


def run_one(job: tuple) -> str:
    import torch
    torch.set_num_threads(1)
    if job[7]:
        hold_out_scored_slices()
    from uda_core.runs.adapt import run_adaptation
    data, out, shift, method, std, steps = job[0], job[1], job[2], job[3], job[4], job[5]
    name, settings = method
    subjects, model = job[8], job[9]
    targets = [Path(data) / shift / f"sub-{s:03d}_{shift}.nii.gz" for s in subjects]
    labels = [Path(data) / shift / f"sub-{s:03d}_labels.nii.gz" for s in subjects]
    engine = {"score_every": 25, "select_by": "last"}
    if job[6]:
        engine["checkpoint_every"] = 25
    if steps:
        engine["steps"] = steps
    paired = ([Path(data) / "t1" / f"sub-{s:03d}_t1.nii.gz" for s in subjects]
              if name == "ddm" else None)   # ddm: each subject's t1 scan as its pair
    summary = run_adaptation(model, name, targets, out, reference=labels,
                             paired=paired,
                             method_settings=settings, engine_settings=engine,
                             save_masks=False, device="cpu", standardise=std,
                             listeners=[keep_steps(Path(out))] if job[6] else ())
    return f"{out}: {summary.get('status')} {summary.get('steps_done')} steps"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--keep-steps", action="store_true")
    parser.add_argument("--hold-out-scored", action="store_true")
    parser.add_argument("--subjects", default="40-42",
                        help="validation subjects, a range A-B or a list (default 40-42)")
    parser.add_argument("--model", default="demo:brain-t1",
                        help="the source model (a bundle or demo:NAME; default demo:brain-t1)")
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    if "-" in args.subjects:
        first, last = (int(x) for x in args.subjects.split("-"))
        subjects = tuple(range(first, last + 1))
    else:
        subjects = tuple(int(x) for x in args.subjects.split(","))
    if max(subjects) >= 100:
        parser.error("subjects 100 and above are the benchmark's: never tune on them")
    jobs = []
    for spec in args.runs:
        shift, rest = spec.split(":", 1)
        method, _, settings = rest.partition(":")
        std = method.endswith("+std")
        method = method.removesuffix("+std")
        values = json.loads(settings) if settings else {}
        tag = re.sub(r"[^A-Za-z0-9.]+", "_", settings).strip("_")
        name = f"{shift}-{method}{'-std' if std else ''}{'-' + tag if tag else ''}"
        name += "-heldout" if args.hold_out_scored else ""
        out = Path(args.out) / name
        if (out / "run.json").is_file():
            continue
        jobs.append((args.data, str(out), shift, (method, values), std, args.steps,
                     args.keep_steps, args.hold_out_scored, subjects, args.model))
    os.makedirs(args.out, exist_ok=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        for line in pool.map(run_one, jobs):
            print(line, flush=True)


if __name__ == "__main__":
    main()
