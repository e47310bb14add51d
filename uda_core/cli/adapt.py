"""`uda adapt`: adapt a segmentation model to unlabelled target scans (first Ctrl-C cancels
cleanly after the current step and keeps the checkpoint to --resume from)."""

from __future__ import annotations

import argparse

from uda_core.cli.common import (
    ConsoleProgress,
    add_device,
    cancel_on_interrupt,
    engine_settings_from,
    finish_adaptation,
    read_settings,
    say,
)


def _guide_fits(model: str) -> bool:
    """Whether `blend` can run on `model` (it takes the default guide's input); False when the
    model cannot be read (run_adaptation then says why)."""
    from uda_core.errors import UdaError
    from uda_core.methods.registry import METHODS, missing_needs
    from uda_core.models.bundle import load_model
    try:
        return not missing_needs(METHODS["blend"], load_model(model), {"target"})
    except UdaError:
        return False


def cmd_adapt(args: argparse.Namespace) -> int:
    from uda_core.engine import RunControl
    from uda_core.models import distributed
    from uda_core.runs.adapt import run_adaptation

    device = args.device
    if args.ddp or distributed.launched_by_torchrun():
        device = distributed.init_from_environment(args.device)
    main_rank = distributed.is_main()

    settings = read_settings(args.config)
    engine_settings = engine_settings_from(settings, args,
                                           ("steps", "seed", "batch_size", "select_by"))
    method, standardise = args.method, args.standardise
    if method == "auto":
        from uda_core.methods.recommend import recommend
        choice = recommend(bool(args.paired), bool(args.source), _guide_fits(args.model))
        method = choice.method
        if choice.standardise and standardise == "off":
            standardise = "auto"
        if main_rank:
            say(f"method auto: {method}"
                f"{' with --standardise' if standardise != 'off' else ''} "
                f"({choice.reason})")
    control = RunControl()
    with cancel_on_interrupt(control):
        summary = run_adaptation(
            args.model, method, args.targets, args.out, paired=args.paired,
            source=args.source, reference=args.reference, method_settings=settings,
            engine_settings=engine_settings, device=device,
            listeners=[ConsoleProgress(method)] if main_rank else [], control=control,
            resume=args.resume, save_masks=not args.no_masks, overwrite=args.overwrite,
            align=args.align, standardise=standardise,
            stream_targets={"auto": None, "on": True, "off": False}[args.stream_targets],
            warn=lambda line: say(f"uda adapt: warning: {line}"),
            note=(lambda line: say(f"uda adapt: {line}")) if main_rank else None)
    if not main_rank:
        return 0
    return finish_adaptation(summary)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from uda_core.methods.catalogue import ADAPTS_3D, help_line
    from uda_core.methods.catalogue import SUMMARIES as methods
    p = sub.add_parser(
        "adapt", help="adapt a model to unlabelled target scans",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Adapt MODEL to the unlabelled TARGET volumes with one method; writes "
                    "OUT/adapted.pt, OUT/metrics.jsonl, OUT/run.json and OUT/masks/.\n\n"
                    "methods:\n" + "\n".join(f"  {k:<12} {help_line(k)}" for k in methods)
                    + "\n\n3D networks adapt on random 3D patches of their window with: "
                    + ", ".join(ADAPTS_3D) + " (ddm: patches at the same voxels of each "
                    "target and its --paired image); the others need a 2D (slice) network.")
    p.add_argument("--model", required=True, help="model bundle or built-in name")
    p.add_argument("--method", required=True, choices=["auto", *methods], metavar="NAME",
                   help="one of: " + ", ".join(methods) + "; or auto: the method the "
                        "benchmark recommends for the data you give (says which and why)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--paired", nargs="+", metavar="IMAGE",
                   help="ddm: a source-modality image of the same subject per target, in the "
                        "same order (co-registered automatically unless on the same grid)")
    p.add_argument("--source", nargs="+", metavar="DATA",
                   help="labelled source volumes or folders (adaptsegnet; optional for ddm)")
    p.add_argument("--reference", nargs="+", metavar="LABELS",
                   help="reference labels per target, for reporting Dice only (never used "
                        "for training or choosing)")
    p.add_argument("--steps", type=int, help="number of updates (default: per method)")
    p.add_argument("--batch-size", type=int,
                   help="target slices (3D models: patches) per update (default 16)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--select-by", help="label-free score that picks the saved checkpoint")
    p.add_argument("--config", help="JSON/TOML file with method settings (and an \"engine\" "
                                    "table)")
    p.add_argument("--resume", help="continue from OUT/checkpoints/last.pt or another "
                                    "checkpoint")
    p.add_argument("--align", choices=["auto", "world", "register"], default="auto",
                   help="how --paired images are aligned to targets (default auto)")
    p.add_argument("--standardise", action="store_const", const="auto", default="off",
                   help="correct each target's bias field (N4) and match its brain "
                        "intensities to the source training data's first (quantile "
                        "matching; the adapted model keeps doing both), "
                        "when the source model scores better on the matched scans "
                        "(flip/brightness consistency up, entropy down; says which; the "
                        "standardise method always checks). Helps another scanner of the "
                        "same weighting, not T1 -> T2")
    p.add_argument("--standardise-always", action="store_const", const="on",
                   dest="standardise", help="match them whatever the scores say")
    p.add_argument("--stream-targets", choices=["auto", "on", "off"], default="auto",
                   help="keep the prepared targets on disk, not in memory, so memory does "
                        "not grow with their number (auto: above 8 targets; same batches)")
    p.add_argument("--ddp", action="store_true",
                   help="data-parallel over the processes torchrun starts (also implied "
                        "under torchrun): torchrun --nproc-per-node N -m uda_core.cli adapt "
                        "... --batch-size B: each process takes B/N slices of every batch, "
                        "gradients and scores are averaged, BatchNorm uses the whole batch's "
                        "statistics, rank 0 writes the outputs (gloo on CPU, NCCL on GPUs)")
    p.add_argument("--no-masks", action="store_true", help="do not write OUT/masks/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing adapted.pt")
    add_device(p)
    p.add_argument("targets", nargs="+", metavar="TARGET", help="unlabelled target volumes")
    p.set_defaults(func=cmd_adapt)
