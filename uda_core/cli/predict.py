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


def cmd_predict(args: argparse.Namespace) -> int:
    from uda_core.engine.device import resolve_device
    from uda_core.io.folder_lock import hold_folder
    from uda_core.io.readers import read_volume
    from uda_core.io.writers import write_volume
    from uda_core.models.bundle import load_model
    from uda_core.models.inference import expected_windows, segment_volume, units

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
    bundle = with_window_options(bundle, args)
    batch_size = args.batch_size or (16 if bundle.dims == 2 else 2)
    network = bundle.build_network(device)
    with hold_folder(out_dir):   # one writer per folder
        for source, target in zip(inputs, targets, strict=True):
            start = time.perf_counter()
            volume = read_volume(source)
            bar = progress_bar(expected_windows(bundle, volume), source.name,
                               units(bundle.window))
            try:
                labels = segment_volume(bundle, network, volume, device, batch_size,
                                        on_batch=bar.update, mirror=not args.no_mirroring)
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
