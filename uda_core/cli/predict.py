"""`uda predict` (masks on each input's own grid) and `uda evaluate` (Dice, HD95, ASSD)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from uda_core.cli.common import add_device, progress_bar
from uda_core.errors import InputError, UdaError

DEMO_CLASS_NAMES = ("background", "CSF", "GM", "WM")


def _segmentation_output(out_dir: Path, source: Path, inputs: list[Path],
                         overwrite: bool) -> Path:
    """OUT/<stem>_seg.nii.gz for `source`; never an input, never an existing file unasked."""
    from uda_core.io.writers import output_stem
    target = out_dir / f"{output_stem(source)}_seg.nii.gz"
    if any(target.resolve() == p.resolve() for p in inputs):
        raise InputError(f"its mask {target} would overwrite an input; choose another --out",
                         source)
    if target.exists() and not overwrite:
        raise InputError("already exists; pass --overwrite to replace it", target)
    return target


def cmd_predict(args: argparse.Namespace) -> int:
    from uda_core.engine.device import resolve_device
    from uda_core.io.folder_lock import hold_folder
    from uda_core.io.readers import read_volume
    from uda_core.io.writers import write_volume
    from uda_core.models.bundle import load_model
    from uda_core.models.inference import segment_volume

    out_dir = Path(args.out)
    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if not path.exists():
            raise InputError("does not exist", path)
    targets = [_segmentation_output(out_dir, p, inputs, args.overwrite) for p in inputs]
    if len(set(targets)) != len(targets):
        raise UdaError("two inputs have the same name, so their masks would collide; "
                       "predict them into different --out folders")
    device = resolve_device(args.device)
    bundle = load_model(args.model)
    if args.standardise:
        from uda_core.models.standardise import standardised
        bundle = standardised(bundle)
    network = bundle.build_network(device)
    with hold_folder(out_dir):   # one writer per folder
        for source, target in zip(inputs, targets, strict=True):
            start = time.perf_counter()
            volume = read_volume(source)
            bar = progress_bar(None, source.name, "slice")
            try:
                labels = segment_volume(bundle, network, volume, device, args.batch_size,
                                        on_batch=bar.update)
            finally:
                bar.close()
            write_volume(labels.with_data(labels.data, source=None), target, dtype="uint8",
                         overwrite=args.overwrite)
            print(f"{target}  ({'x'.join(map(str, volume.shape))} voxels, "
                  f"{time.perf_counter() - start:.1f} s)")
    return 0


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
                                   "(same shape and affine).")
    p.add_argument("--model", required=True,
                   help="a model bundle (.pt), a TorchScript file, or a built-in name such "
                        "as demo:brain-t1 (see `uda models`)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per batch (default 16)")
    p.add_argument("--overwrite", action="store_true", help="replace existing masks in --out")
    p.add_argument("--standardise", action="store_true",
                   help="match each input's intensities to the model's source data first "
                        "(quantile matching; for another scanner of the same weighting)")
    add_device(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="volumes: .nii/.nii.gz/.mgz/.mha/.mhd/.nrrd files or DICOM folders")
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
