"""Candidate label-free checkpoint scores, computed afterwards on the kept weights of
validation runs (`scripts/validation_study.py --keep-steps`), beside the reference Dice.

    .venv/bin/python scripts/study_checkpoint_scores.py OUT RUN_DIR...

For each RUN_DIR (a run on VALIDATION subjects, never the benchmark's 100+) and each kept
step (step 0 = the bundle's weights; steps/step_NNNN.pt), with the network in eval mode:

- consistency: the engine's score on its 32 score slices (flip and brighter view), with
  consistency_se, the standard error of its per-slice values (the noise of the score);
- consistency_other: the same on 64 other target slices (not the score slices; the run
  trained on all slices, so they are not held out of training);
- views: agreement with four views (flip, brighter, gamma 0.8, contrast 0.8) on the score
  slices;
- teacher: agreement (mean foreground Dice of the label maps) with a frozen teacher, the
  source network with AdaBN statistics (re-estimated on all target slices), on the score and
  the other slices;
- anchor_confident: share of the pixels where step 0 was confident (max probability > 0.9;
  foreground at step 0 or now) whose label is unchanged since step 0;
- dice_scored: reference Dice on the score slices (what metrics.jsonl records), for
  evaluation only.

Writes OUT (JSON lines: one row per run and step).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from uda_core.engine.config import EngineConfig
from uda_core.methods.intensity_views import contrast, gamma
from uda_core.methods.tent import batchnorm_layers
from uda_core.models.bundle.format import load_model
from uda_core.models.standardise import standardised
from uda_core.scores.label_free import label_agreement
from uda_core.tasks.segmentation import SegmentationTask
from uda_core.tasks.segmentation_data import load_adaptation_data

OTHER_SLICES = 64


@torch.no_grad()
def labels_of(network: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([network(images[i:i + 16]).argmax(1) for i in range(0, len(images), 16)])


def per_slice_agreement(a: torch.Tensor, b: torch.Tensor, c: int) -> np.ndarray:
    return np.array([label_agreement(a[i:i + 1], b[i:i + 1], c) for i in range(len(a))])


@torch.no_grad()
def adabn_teacher(bundle, images: torch.Tensor) -> torch.nn.Module:
    """The source network with BatchNorm statistics averaged over `images` (AdaBN)."""
    teacher = bundle.build_network(torch.device("cpu"))
    teacher.eval()
    for bn in batchnorm_layers(teacher):
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for i in range(0, len(images), 16):
        teacher(images[i:i + 16])
    return teacher.eval()


def stack(data, pairs) -> torch.Tensor:
    return torch.from_numpy(np.stack([data.inputs[v].slices[z] for v, z in pairs])).unsqueeze(1)


def score_run(run_dir: Path) -> list[dict]:
    run = json.loads((run_dir / "run.json").read_text())
    bundle = load_model("demo:brain-t1")
    if run.get("standardised"):
        bundle = standardised(bundle)
    data = load_adaptation_data(bundle, run["targets"], reference=run["reference"])
    network = bundle.build_network(torch.device("cpu"))
    c = len(bundle.class_names)
    config = EngineConfig()
    method = SimpleNamespace(device=torch.device("cpu"), network=network, bundle=bundle)
    task = SegmentationTask(method, data, config)   # the engine's score slices
    scored = task._score_set["images"]
    ref_scored = task._score_set["reference"]
    pool = task.pool
    rng = np.random.default_rng(config.seed + 1)
    n = min(config.score_slices, len(pool.volume))
    chosen = set(np.sort(rng.choice(len(pool.volume), n, replace=False)).tolist())
    rest = [i for i in range(len(pool.volume)) if i not in chosen]
    other_ix = np.sort(np.random.default_rng(7).choice(rest, OTHER_SLICES, replace=False))
    other = stack(data, list(zip(pool.volume[other_ix], pool.slice[other_ix], strict=True)))
    everything = stack(data, list(zip(pool.volume, pool.slice, strict=True)))
    teacher = adabn_teacher(bundle, everything)
    t_scored, t_other = labels_of(teacher, scored), labels_of(teacher, other)
    steps = [(0, None)] + sorted((int(p.stem.split("_")[1]), p)
                                 for p in (run_dir / "steps").glob("step_*.pt"))
    rows = []
    confident = None   # step 0's labels where it is confident (max probability > 0.9)
    for step, path in steps:
        if path is not None:
            network.load_state_dict(torch.load(path, map_location="cpu",
                                               weights_only=False)["network"])
        network.eval()
        lab = labels_of(network, scored)
        if confident is None:
            with torch.no_grad():
                top = torch.cat([torch.softmax(network(scored[i:i + 16]), 1).amax(1)
                                 for i in range(0, len(scored), 16)])
            confident = (lab.clone(), top > 0.9)
        keep = confident[1] & ((confident[0] > 0) | (lab > 0))
        anchor = float((lab[keep] == confident[0][keep]).float().mean())
        views = {"flip": labels_of(network, scored.flip(-2)).flip(-2),
                 "bright": labels_of(network, scored * 1.1 + 0.1),
                 "gamma": labels_of(network, gamma(scored, torch.full((len(scored),), 0.8))),
                 "contrast": labels_of(network, contrast(scored,
                                                         torch.full((len(scored),), 0.8)))}
        per = {k: per_slice_agreement(lab, v, c) for k, v in views.items()}
        cons_slices = 0.5 * (per["flip"] + per["bright"])
        lab_o = labels_of(network, other)
        cons_other = 0.5 * (label_agreement(lab_o, labels_of(network, other.flip(-2)).flip(-2),
                                            c)
                            + label_agreement(lab_o, labels_of(network, other * 1.1 + 0.1), c))
        rows.append({
            "run": run_dir.name, "method": run["method"], "step": step,
            "consistency": 0.5 * (label_agreement(lab, views["flip"], c)
                                  + label_agreement(lab, views["bright"], c)),
            "consistency_se": float(cons_slices.std(ddof=1) / np.sqrt(len(cons_slices))),
            "consistency_other": cons_other,
            "views": float(np.mean([label_agreement(lab, v, c) for v in views.values()])),
            **{f"view_{k}": label_agreement(lab, v, c) for k, v in views.items()},
            "teacher": label_agreement(lab, t_scored, c),
            "anchor_confident": anchor,
            "teacher_other": label_agreement(lab_o, t_other, c),
            "dice_scored": label_agreement(lab, ref_scored, c),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(out: str, run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    done = set()
    if Path(out).is_file():
        done = {json.loads(line)["run"] for line in Path(out).read_text().splitlines()}
    for run_dir in map(Path, run_dirs):
        if run_dir.name in done or not (run_dir / "run.json").is_file():
            continue
        rows = score_run(run_dir)
        with open(out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
