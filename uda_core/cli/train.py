"""`uda train-source`: supervised training of a segmentation model on labelled volumes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from uda_core.cli.common import add_device, progress_bar
from uda_core.errors import InputError, UdaError


def cmd_train_source(args: argparse.Namespace) -> int:
    from uda_core.engine.device import resolve_device
    from uda_core.io.atomic import check_writable
    from uda_core.io.files import find_labelled_pairs
    from uda_core.models.bundle import save_bundle
    from uda_core.runs.train_segmentation import SourceTrainingConfig, train_source_model

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError("already exists; pass --overwrite to replace it", out)
    if out.parent.is_dir():
        check_writable(out.parent)        # read-only: said now, not after the training
    pairs = find_labelled_pairs(args.data)
    if args.val:
        val_pairs = find_labelled_pairs(args.val)
        train_pairs = pairs
    else:
        if len(pairs) < 2:
            raise UdaError("train-source needs at least 2 labelled volumes (one is held out "
                           "for choosing the best epoch), or --val")
        n_val = max(1, len(pairs) // 6)
        train_pairs, val_pairs = pairs[:-n_val], pairs[-n_val:]
    if args.dims == 3:
        return _train_3d(args, train_pairs, val_pairs, out)
    network_settings: dict[str, Any] = {}
    init_state = None
    if args.init:   # fine-tuning: the parent's architecture, grid, classes and normalisation
        from uda_core.models.bundle import load_model
        parent = load_model(args.init)
        if parent.architecture != "unet2d" or parent.torchscript is not None:
            raise InputError("--init needs a 2D U-Net bundle to start from", args.init)
        if not parent.has_early_head:
            raise InputError("--init needs a bundle with an early-feature head", args.init)
        kwargs, grid = parent.full_arch_kwargs(), parent.grid
        network_settings = {
            "base_channels": int(kwargs["base_channels"]), "depth": int(kwargs["depth"]),
            "class_names": tuple(parent.class_names), "spacing_mm": grid.spacing_mm,
            "in_plane_shape": grid.in_plane_shape, "normalisation": dict(grid.normalisation)}
        init_state = parent.build_network().state_dict()
    config = SourceTrainingConfig(epochs=args.epochs, head_epochs=args.head_epochs,
                                  batch_size=args.batch_size, seed=args.seed,
                                  modality=args.modality,
                                  skull_stripped_input=args.skull_stripped_input,
                                  augment=args.augment, lr=args.lr,
                                  class_weights=_weights(args.class_weights),
                                  boundary_weight=args.boundary_weight,
                                  **network_settings)
    if config.class_weights is not None and len(config.class_weights) != len(config.class_names):
        raise InputError(f"--class-weights needs {len(config.class_names)} numbers, one per "
                         f"class ({', '.join(config.class_names)}); got {args.class_weights!r}")
    device = resolve_device(args.device)
    print(f"training on {len(train_pairs)} volumes, validating on {len(val_pairs)} "
          f"({device})", file=sys.stderr)
    bars: dict[str, Any] = {}  # tqdm bars by phase

    def progress(phase, done, total, scores):
        if not sys.stderr.isatty():  # logs get one plain line per epoch
            print(f"{phase} epoch {done}/{total}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), file=sys.stderr)
            return
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = progress_bar(total, phase, "epoch")
        bar.set_postfix({k: f"{v:.3f}" for k, v in scores.items()})
        bar.update(1)

    snapshot = None
    if args.snapshots:
        snapshots = Path(args.snapshots)
        snapshots.mkdir(parents=True, exist_ok=True)

        def snapshot(epoch, candidate):
            candidate.provenance["parent"] = str(args.init) if args.init else None
            save_bundle(candidate, snapshots / f"epoch{epoch:02d}.pt", overwrite=True)

    bundle, summary = train_source_model(train_pairs, val_pairs, config, device, progress,
                                         init_state=init_state, snapshot=snapshot)
    if args.init:
        bundle.provenance["parent"] = str(args.init)
    for bar in bars.values():
        bar.close()
    save_bundle(bundle, out, overwrite=args.overwrite)
    print(f"{out}  validation Dice: network {summary['val_dice']:.3f}, "
          f"early head {summary['val_dice_early_head']:.3f}")
    return 0


def _train_3d(args: argparse.Namespace, train_pairs, val_pairs, out: Path) -> int:
    """train-source --dims 3: a small 3D MONAI UNet on random patches."""
    from uda_core.engine.device import resolve_device
    from uda_core.models.bundle import save_bundle
    from uda_core.runs.train_segmentation_3d import Source3DConfig, train_source_3d

    if args.init:
        raise UdaError("--init fine-tunes 2D U-Net bundles only; leave it out with --dims 3")
    config = Source3DConfig(steps=args.steps, roi=args.roi, seed=args.seed,
                            channels=_channels(args.channels),
                            val_every=max(50, args.steps // 5),
                            batch_size=min(args.batch_size, 4), modality=args.modality,
                            skull_stripped_input=args.skull_stripped_input)
    device = resolve_device(args.device)
    print(f"training a 3D network on {len(train_pairs)} volumes, validating on "
          f"{len(val_pairs)} ({device})", file=sys.stderr)

    def progress(phase, done, total, scores):
        print(f"{phase} step {done}/{total}: "
              + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), file=sys.stderr)

    bundle, summary = train_source_3d(train_pairs, val_pairs, config, device, progress)
    save_bundle(bundle, out, overwrite=args.overwrite)
    print(f"{out}  validation Dice: {summary['val_dice']:.3f} (3D, window {args.roi}^3)")
    return 0


def _weights(text: str | None) -> tuple[float, ...] | None:
    """'1,2,1,1' -> (1.0, 2.0, 1.0, 1.0); None stays None; InputError unless positive numbers."""
    if text is None:
        return None
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        weights = ()
    if not weights or min(weights) <= 0:
        raise InputError("--class-weights needs positive numbers separated by commas, one "
                         f"per class (background first), e.g. 1,2,1,1; got {text!r}")
    return weights


def _channels(text: str) -> tuple[int, ...]:
    """'16,32,64' -> (16, 32, 64); InputError unless 2+ positive integers."""
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        channels = ()
    if len(channels) < 2 or min(channels) < 1:
        raise InputError("--channels needs 2 or more positive integers separated by commas, "
                         f"e.g. 16,32,64; got {text!r}")
    return channels


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-source", help="train a segmentation model on labelled data",
                       description="Supervised training of a 2D U-Net on labelled volumes "
                                   "(each image needs <prefix>_labels.nii.gz beside it), then "
                                   "its class-ratio prior and early-feature head; writes a "
                                   "model bundle.")
    p.add_argument("--out", required=True, help="the model bundle to write (.pt)")
    p.add_argument("--val", nargs="+", help="validation volumes or folders (default: hold "
                                            "out the last sixth of DATA)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2,
                   help="2: the slice U-Net with prior and early head (default); 3: a small "
                        "3D MONAI UNet trained on random patches (--steps, --roi)")
    p.add_argument("--steps", type=int, default=300, help="--dims 3: updates (default 300)")
    p.add_argument("--roi", type=int, default=48,
                   help="--dims 3: patch and window size in voxels per axis (default 48)")
    p.add_argument("--channels", default="8,16,32",
                   help="--dims 3: channels per UNet level, each level after the first "
                        "halves the grid (default 8,16,32)")
    p.add_argument("--epochs", type=int, default=30, help="network epochs (default 30)")
    p.add_argument("--head-epochs", type=int, default=8, help="early-head epochs (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="default 16")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam learning rate at the start, cosine decay to 0 (default 1e-3)")
    p.add_argument("--class-weights", metavar="W,W,...",
                   help="cross-entropy weight per class, background first, e.g. 1,2,1,1 to "
                        "emphasise CSF (default: all 1; the Dice term is unweighted)")
    p.add_argument("--boundary-weight", type=float, default=0.0,
                   help="extra cross-entropy weight of pixels within 2 pixels of the brain's "
                        "edge, e.g. 2 weighs them 3 times (default 0: none)")
    p.add_argument("--snapshots", metavar="DIR",
                   help="also write the network after every epoch to DIR/epochNN.pt "
                        "(early head not yet retrained), to choose among them later")
    p.add_argument("--modality", default="T1w", help="input modality recorded in the bundle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", choices=("none", "geometric", "contrast"), default="none",
                   help="augmentation of the training slices: none (left-right flips only; "
                        "the default), geometric (+ rotations of up to 10 degrees and "
                        "scalings of 0.9-1.1), contrast (geometric + a random intensity for each "
                        "labelled tissue half of the time, random gamma, intensity curves, "
                        "bias fields, blur as from thick slices, noise: a model for scanners "
                        "and contrasts it never saw)")
    region = p.add_mutually_exclusive_group()
    region.add_argument("--skull-stripped-input", dest="skull_stripped_input",
                        action="store_const", const=True, default=None,
                        help="record in the bundle that the model expects brain-extracted "
                             "(skull-stripped) scans")
    region.add_argument("--whole-head-input", dest="skull_stripped_input",
                        action="store_const", const=False,
                        help="record in the bundle that the model segments whole heads "
                             "(default: neither is recorded)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from this model's weights (a 2D U-Net bundle or built-in name, "
                        "e.g. demo:brain-t1) instead of random ones: fine-tuning with its "
                        "architecture, model grid, classes and normalisation")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_device(p)
    p.add_argument("data", nargs="+", metavar="DATA", help="image files or folders")
    p.set_defaults(func=cmd_train_source)
