"""`uda predict` (masks on each input's own grid) and `uda evaluate` (Dice, HD95, ASSD)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uda_core.cli.common import add_device, note, progress_bar
from uda_core.errors import InputError, UdaError

DEMO_CLASS_NAMES = ("background", "CSF", "GM", "WM")
#: A cohort predict exits with the number of inputs that failed, up to this.
MAX_FAILED_EXIT = 125


def _segmentation_output(out_dir: Path, source: Path, inputs: list[Path],
                         overwrite: bool, skip_existing: bool = False) -> Path:
    """OUT/<stem>_seg.nii.gz for `source`; never an input, never an existing file unasked."""
    from uda_core.io.writers import output_stem
    target = out_dir / f"{output_stem(source)}_seg.nii.gz"
    if any(target.resolve() == p.resolve() for p in inputs):
        raise InputError(f"its mask {target} would overwrite an input; choose another --out",
                         source)
    if target.exists() and not (overwrite or skip_existing):
        raise InputError("already exists; pass --overwrite to replace it (or "
                         "--skip-existing to keep it)", target)
    return target


def parse_roi(text: str) -> list[int]:
    """--roi "96,96,96" (or one number for a cube) -> [96, 96, 96]; UdaError when malformed."""
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) < 1:
        raise UdaError(f"--roi must be three positive integers such as 96,96,96, got {text!r}")
    return values


def with_window_options(bundle, args: argparse.Namespace):
    """The bundle with --roi / --overlap applied to its sliding window (3D bundles only)."""
    import dataclasses
    if args.roi is None and args.overlap is None:
        return bundle
    if bundle.dims != 3 or bundle.window is None:
        raise UdaError("--roi and --overlap apply to 3D models only; this one is 2D")
    window = dict(bundle.window)
    if args.roi is not None:
        window["roi_size"] = parse_roi(args.roi)
    if args.overlap is not None:
        if not 0 <= args.overlap < 1:
            raise UdaError(f"--overlap must be in [0, 1), got {args.overlap}")
        window["overlap"] = float(args.overlap)
    return dataclasses.replace(bundle, window=window)


def _summary_path(out_dir: Path, num_parts: int, part_id: int) -> Path:
    if num_parts == 1:
        return out_dir / "predict_summary.csv"
    return out_dir / f"predict_summary.part{part_id}-of-{num_parts}.csv"


def cmd_predict(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from uda_core.cli.common import say
    from uda_core.engine.device import resolve_device
    from uda_core.io.cohort import expand_inputs, shard
    from uda_core.io.folder_lock import hold_folder
    from uda_core.models.bundle import load_model
    from uda_core.models.inference import units
    from uda_core.runs.predict_cohort import CohortItem, predict_cohort, write_summary

    out_dir = Path(args.out)
    every = expand_inputs(args.inputs, exclude=[out_dir])
    inputs = shard(every, args.num_parts, args.part_id)
    # one volume named on its own, with no cohort option: the careful single-file run (any
    # problem is the command's one-line error, nothing else is written)
    strict = (len(args.inputs) == 1 and every == [Path(args.inputs[0])]
              and not (args.skip_existing or args.num_parts > 1 or args.workers))
    targets = [_segmentation_output(out_dir, p, every, args.overwrite, args.skip_existing)
               for p in inputs]
    if len(set(targets)) != len(targets):
        raise UdaError("two inputs have the same name, so their masks would collide; "
                       "predict them into different --out folders")
    items = [CohortItem(p, t, skip=args.skip_existing and t.exists())
             for p, t in zip(inputs, targets, strict=True)]
    workers = args.workers if args.workers is not None else (
        0 if strict else min(2, os.cpu_count() or 1))
    device = resolve_device(args.device)
    bundle = load_model(args.model)
    if args.standardise != "off":
        from uda_core.tasks.standardisation import standardise_as_asked
        bundle, verdict = standardise_as_asked(
            bundle, args.standardise, [item.source for item in items if not item.skip],
            device)
        if verdict is not None:
            say(f"uda predict: {verdict.line}")
    bundle = with_window_options(bundle, args)
    batch_size = args.batch_size or (16 if bundle.dims == 2 else 2)
    network = bundle.build_network(device)
    if not items:
        say(f"part {args.part_id} of {args.num_parts} has no inputs ({len(every)} in all)")
        return 0
    if strict:   # one file: count its slices (2D) or windows (3D)
        bar = progress_bar(None, inputs[0].name, units(bundle.window))
    else:
        bar = progress_bar(len(items), "predict", "volume")

    def on_row(row: dict) -> None:
        if row["status"] == "written":
            note(bar, f"{row['mask']}  ({row['voxels']} voxels, {row['seconds']:.1f} s)")
        elif row["status"] == "failed":
            note(bar, f"failed: {row['reason']}" if row["reason"].startswith(row["file"])
                 else f"failed: {row['file']}: {row['reason']}")
        if not strict:
            bar.update(1)

    # parts of one cohort write into one folder side by side: lock only an unsplit run
    lock = hold_folder(out_dir) if args.num_parts == 1 else contextlib.nullcontext(out_dir)
    with lock:
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            rows = predict_cohort(bundle, network, device, items, workers=workers,
                                  batch_size=batch_size, overwrite=args.overwrite,
                                  strict=strict, mirror=not args.no_mirroring,
                                  on_row=on_row,
                                  on_batch=bar.update if strict else None)
        finally:
            bar.close()
        if strict:
            return 0
        summary = write_summary(_summary_path(out_dir, args.num_parts, args.part_id), rows,
                                bundle.class_names)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("written", "skipped", "failed")}
    say(f"{counts['written']} written, {counts['skipped']} skipped, {counts['failed']} "
        f"failed; summary: {summary}")
    return min(counts["failed"], MAX_FAILED_EXIT)


def cmd_evaluate(args: argparse.Namespace) -> int:

    from uda_core.io.readers import read_labels
    from uda_core.scores.segmentation import segmentation_scores

    reference = read_labels(args.labels)
    prediction = read_labels(args.prediction)
    if not prediction.same_grid(reference):
        raise InputError(f"is on another voxel grid than {args.labels} (shape "
                         f"{prediction.shape} vs {reference.shape} or different affine); "
                         "both must share one grid", args.prediction)
    n_labels = int(max(prediction.data.max(), reference.data.max())) + 1
    if args.classes:
        names = [n.strip() for n in args.classes.split(",")]
        if len(names) < n_labels:
            raise UdaError(f"--classes names {len(names)} classes but the maps hold labels "
                           f"up to {n_labels - 1}")
    elif n_labels <= len(DEMO_CLASS_NAMES):
        names = list(DEMO_CLASS_NAMES)
    else:
        names = [f"label_{k}" for k in range(n_labels)]
    scores = segmentation_scores(prediction.data, reference.data, names, reference.spacing,
                                 surface=not args.no_surface)
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    header = f"{'class':<12}{'Dice':>8}" + ("" if args.no_surface else
                                            f"{'HD95 mm':>10}{'ASSD mm':>10}")
    print(header)
    for name, entry in scores["per_class"].items():
        row = f"{name:<12}{entry['dice']:>8.3f}"
        if not args.no_surface:
            row += f"{entry['hd95_mm']:>10.2f}{entry['assd_mm']:>10.2f}"
        print(row)
    row = f"{'mean':<12}{scores['mean_dice']:>8.3f}"
    if not args.no_surface:
        row += f"{scores['mean_hd95_mm']:>10.2f}{scores['mean_assd_mm']:>10.2f}"
    print(row)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment volumes with a model",
                       description="Segment each INPUT with a model and write "
                                   "OUT/<name>_seg.nii.gz on the input's own voxel grid "
                                   "(same shape and affine). INPUT: volume files, folders "
                                   "(searched recursively; a folder of DICOM files is one "
                                   "series), globs (quoted; ** recurses) or .csv/.txt lists. "
                                   "More than one input: a failing one is reported and "
                                   "skipped, OUT/predict_summary.csv lists every input "
                                   "(status, seconds, class volumes in mL, entropy, "
                                   "prior_kl, flags) and the exit status is the number "
                                   "that failed.")
    p.add_argument("--model", required=True,
                   help="a model bundle (.pt), a TorchScript file, a built-in name such "
                        "as demo:brain-t1 (see `uda models`), or a MONAI bundle / nnU-Net v2 "
                        "result folder or zip (imported on the fly)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices per batch (default 16), or windows per batch for a 3D model "
                        "(default 2)")
    p.add_argument("--roi", help="3D models: sliding-window size in voxels, network axis order "
                                 "(e.g. 96,96,96; default: the model's)")
    p.add_argument("--overlap", type=float,
                   help="3D models: overlap of neighbouring windows, 0..1 (default: the model's)")
    p.add_argument("--no-mirroring", action="store_true",
                   help="3D models: skip test-time mirroring (nnU-Net models mirror by default; "
                        "2**axes times faster without)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace existing masks in --out")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave inputs whose mask already exists (resume a cohort "
                               "after a crash: masks are written atomically, so an existing "
                               "one is complete)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes that read, resample and write while the network "
                        "runs (0: all in this process; default 0 for one file, else "
                        "min(2, CPU cores))")
    p.add_argument("--num-parts", type=int, default=1, metavar="N",
                   help="split the inputs into N parts and do only one (one job per GPU or "
                        "cluster task; every part must be given the same inputs)")
    p.add_argument("--part-id", type=int, default=0, metavar="K",
                   help="which part to do, 0..N-1 (default 0)")
    p.add_argument("--standardise", action="store_const", const="auto", default="off",
                   help="correct each input's bias field (N4) and match its brain "
                        "intensities to the model's source data first (quantile matching; "
                        "for another scanner of the same "
                        "weighting), when the model scores better on the matched inputs "
                        "(flip/brightness consistency up, entropy down; says which)")
    p.add_argument("--standardise-always", action="store_const", const="on",
                   dest="standardise", help="match them whatever the scores say")
    add_device(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="volumes (.nii/.nii.gz/.mgz/.mha/.mhd/.nrrd), folders, globs or list "
                        "files")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score a mask against reference labels",
                       description="Per-class Dice, HD95 and ASSD (mm) of PRED against the "
                                   "reference --labels; both on one voxel grid.")
    p.add_argument("--labels", required=True, help="reference label map")
    p.add_argument("--classes", help="comma-separated class names in label order "
                                     "(default: background,CSF,GM,WM)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-surface", action="store_true", help="Dice only (skip HD95/ASSD)")
    p.add_argument("prediction", metavar="PRED", help="predicted label map")
    p.set_defaults(func=cmd_evaluate)
