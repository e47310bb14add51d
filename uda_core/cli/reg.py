"""The `uda reg` command group: registration across modalities (METHODS.md section 6).

``uda reg train-source`` trains the discrete registration net on demo T1-T1 pairs;
``uda reg apply`` registers a moving volume onto a fixed one (the network, or the SimpleITK
B-spline baseline with ``--method sitk``); ``uda reg adapt`` and ``uda reg bench`` come from
:mod:`uda_core.cli.reg_adapt`. ``add_reg_parser`` builds the group and returns its
sub-parsers. Heavy modules (torch) are imported inside the commands, so ``uda --help`` stays
fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uda_core.cli.common import add_device, note, say, subject_range
from uda_core.errors import InputError, UdaError


def _subjects(text: str) -> tuple[int, ...]:
    """'0-11,20-27' -> (0, ..., 11, 20, ..., 27); 'none' -> ()."""
    return tuple(subject_range(text))


# --- uda reg train-source ------------------------------------------------------------------

def cmd_reg_train_source(args: argparse.Namespace) -> int:
    import torch

    from uda_core.engine.device import resolve_device
    from uda_core.runs.train_registration import RegTrainingConfig, train_registration_source

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError("already exists; pass --overwrite to replace it", out)
    if not out.parent.is_dir():
        raise InputError(f"cannot be written: folder {out.parent} does not exist", out)
    if not args.subjects:
        raise UdaError("--subjects must name at least one training subject")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = RegTrainingConfig(subjects=args.subjects, val_subjects=args.val_subjects,
                               eval_subjects=args.eval_subjects, eval_domain=args.eval_domain,
                               steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, width=args.width, features=args.features)
    device = resolve_device(args.device)
    say(f"simulating demo subjects {_range_text(config.subjects)}, then training "
         f"{config.steps} steps ({device})")
    bars: dict = {}
    interactive = sys.stderr.isatty()

    def progress(phase: str, done: int, total: int, scores: dict) -> None:
        text = ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != "pairs")
        if phase in ("validate", "evaluate"):
            note(bars.get("train"), f"{phase} ({done}/{total}): {text}")
            return
        if not interactive:
            if phase == "train" and (done % 100 == 0 or done == total):
                say(f"step {done}/{total}: {text}")
            return
        bar = bars.get(phase)
        if bar is None:
            from tqdm import tqdm
            bar = bars[phase] = tqdm(total=total, desc=phase, unit="step" if phase == "train"
                                     else "subject", file=sys.stderr, leave=False)
        if scores:
            bar.set_postfix({k: f"{v:.3f}" for k, v in scores.items()}, refresh=False)
        bar.update(done - bar.n)

    try:
        bundle, summary = train_registration_source(config, None, device=device,
                                                    progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    from uda_core.models.bundle import save_bundle
    save_bundle(bundle, out, overwrite=args.overwrite)
    lines = [f"{out}  ({summary['steps_done']} steps, {summary['total_seconds']:.0f} s)"]
    for key in sorted(k for k in summary if k.startswith("eval_")):
        s = summary[key]
        lines.append(f"  {key[5:].replace('_', '-')}: accuracy {s['accuracy']:.3f} "
                     f"(no motion {s['accuracy_identity']:.3f}), EPE {s['epe_mm']:.2f} mm "
                     f"(before {s['epe_identity_mm']:.2f}), Dice {s['dice_before']:.3f} -> "
                     f"{s['dice_after']:.3f}, folding {100 * s['folding']:.2f} %")
    print("\n".join(lines))
    return 0


def _range_text(subjects) -> str:
    if len(subjects) <= 6:
        return ",".join(str(s) for s in subjects)
    return f"{subjects[0]}..{subjects[-1]} ({len(subjects)} subjects)"


# --- uda reg apply -------------------------------------------------------------------------

def _outputs(args: argparse.Namespace, inputs: list[Path]) -> dict[str, Path]:
    from uda_core.runs.register import output_paths

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("is a file; --out must be a folder", out_dir)
    targets = output_paths(out_dir, Path(args.moving), bool(args.moving_labels))
    for target in targets.values():
        if any(target.resolve() == p.resolve() for p in inputs):
            raise InputError(f"would overwrite the input {target}; choose another --out",
                             target)
        if target.exists() and not args.overwrite:
            raise InputError("already exists; pass --overwrite to replace it", target)
    return targets


def cmd_reg_apply(args: argparse.Namespace) -> int:
    inputs = [Path(p) for p in (args.fixed, args.moving, args.moving_labels) if p]
    for path in inputs:
        if not path.exists():
            raise InputError("does not exist", path)
    if args.method == "sitk" and args.model:
        raise UdaError("--model is not used with --method sitk (SimpleITK B-spline); "
                       "leave one of them out")
    if args.method == "network" and not args.model:
        raise UdaError("--model is required (a registration model such as demo:reg-t1), or "
                       "use --method sitk")
    from uda_core.engine.device import resolve_device
    from uda_core.io.atomic import check_writable, output_error
    from uda_core.io.readers import read_labels, read_volume
    from uda_core.models.bundle.registration import load_registration_model
    from uda_core.runs.register import register_volumes, resample_onto, write_outputs

    device = resolve_device(args.device)
    bundle = network = None
    if args.method == "network":
        bundle, network = load_registration_model(args.model, device)
    targets = _outputs(args, inputs)
    check_writable(args.out)      # read-only: said now, not after the registration
    fixed = read_volume(args.fixed)
    moving = read_volume(args.moving)
    labels = read_labels(args.moving_labels) if args.moving_labels else None
    if labels is not None and not labels.same_grid(moving):
        raise InputError(f"is not on the grid of {args.moving}; labels must share their "
                         "image's grid", args.moving_labels)
    if args.resample_moving:
        if labels is not None and not labels.same_grid(moving):
            raise InputError(f"is not on the grid of {args.moving}; labels must share their "
                             "image's grid", args.moving_labels)
        if not moving.same_grid(fixed):
            say(f"note: resampling {args.moving} onto the grid of {args.fixed}")
            moving = resample_onto(moving, fixed)
            labels = None if labels is None else resample_onto(labels, fixed, labels=True)
    from tqdm import tqdm
    bar = tqdm(desc=Path(args.moving).name, unit="slice", file=sys.stderr, leave=False,
               disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    from uda_core.runs.register import DEFAULT_REFINE
    from uda_core.spatial.volume_refine import VolumeRefinement
    iterations = args.refine_iterations
    if iterations is not None and iterations < 0:
        raise UdaError(f"--refine-iterations must be >= 0, got {iterations}")
    refine = (DEFAULT_REFINE if iterations is None else None if iterations == 0 else
              DEFAULT_REFINE.with_iterations(iterations))
    try:
        result = register_volumes(bundle, fixed, moving, labels, device=device,
                                  method=args.method, network=network,
                                  batch_size=args.batch_size, prealign=args.prealign,
                                  refine=refine, fallback=not args.keep_learned,
                                  moving_modality=args.moving_modality,
                                  fixed_modality=args.fixed_modality,
                                  refine_3d=(None if args.refine_3d == "off" else
                                             VolumeRefinement()),
                                  refine_3d_mode="on" if args.refine_3d == "on" else "auto",
                                  progress=progress)
    finally:
        bar.close()
    for line in result.notes:
        say(f"note: {line}")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:   # a read-only or full place: one line naming --out
        raise (output_error(exc, args.out) or exc) from exc
    write_outputs(result, targets, inputs, replace=targets.values() if args.overwrite else ())
    for target in targets.values():
        print(target)
    where = "head voxels (3D)" if "after_3d" in result.similarity else "head pixels"
    say(f"{args.method}: {result.slices} slices in {result.seconds:.1f} s, folding "
        f"{100 * result.folding:.2f} % of {where}")
    return 0


# --- parser --------------------------------------------------------------------------------

def add_reg_parser(sub) -> argparse._SubParsersAction:
    """Add `uda reg` to the top-level sub-parsers ``sub``; return the group's sub-parsers."""
    reg = sub.add_parser("reg", help="multimodal registration (train, apply, adapt, bench)",
                         description="2D discrete registration network (PDD-net-like) trained "
                                     "on mono-modal pairs and adapted across modalities.")
    reg_sub = reg.add_subparsers(dest="reg_command", required=True, metavar="REG_COMMAND")

    p = reg_sub.add_parser(
        "train-source", help="train the registration net on demo T1-T1 pairs",
        description="Supervised training on demo T1 subjects (simulated in memory): moving = "
                    "fixed slice warped by a known random smooth field, labels = its quantised "
                    "displacement at the control points. Scores the result on held-out T1-T1 "
                    "and T1-T2 pairs and writes a registration model bundle.")
    p.add_argument("--out", required=True, help="the model bundle to write (.pt)")
    p.add_argument("--subjects", type=_subjects, default=_subjects("0-11,20-27"),
                   help="training subjects (default 0-11,20-27, as demo:brain-t1)")
    p.add_argument("--val-subjects", type=_subjects, default=_subjects("12-13"),
                   help="subjects whose T1-T1 pairs choose the best step (default 12-13; "
                        "none to keep the last step)")
    p.add_argument("--eval-subjects", type=_subjects, default=_subjects("100-102"),
                   help="held-out subjects scored at the end (default 100-102; none to skip)")
    p.add_argument("--eval-domain", default="t2",
                   help="moving modality of the cross-modal check (default t2)")
    p.add_argument("--steps", type=int, default=1200, help="updates (default 1200)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per update (default 8)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    p.add_argument("--width", type=int, default=8,
                   help="channels of the feature net's first layer, doubled per stride-2 "
                        "stage up to 4x (default 8, as demo:reg-t1)")
    p.add_argument("--features", type=int, default=16,
                   help="channels of the matched features (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_device(p, "where the network runs (default: auto)")
    p.set_defaults(func=cmd_reg_train_source)

    p = reg_sub.add_parser(
        "apply", help="register a moving volume onto a fixed one",
        description="Register MOV onto F slice by slice (axial slices of the model's 2 mm "
                    "grid) and write, on F's grid (same shape and affine): "
                    "OUT/<stem>_warped.nii.gz, OUT/<stem>_labels_warped.nii.gz (with "
                    "--moving-labels, nearest neighbour) and OUT/<stem>_field.nii.gz: the "
                    "displacement u in RAS mm, float32 (X, Y, Z, 3), warped(p) = MOV(p + "
                    "u(p)), the affine pre-alignment and the deformable step composed. "
                    "<stem> is MOV's file name without its extension. Notes say when the "
                    "model was trained on other modalities or when its deformation was "
                    "dropped because it lowered the mutual information.")
    p.add_argument("--model", help="a registration model (.pt) or a built-in name such as "
                                   "demo:reg-t1 (not with --method sitk)")
    p.add_argument("--method", choices=("network", "sitk"), default="network",
                   help="network (default): the --model; sitk: SimpleITK B-spline with "
                        "Mattes mutual information, the classical baseline")
    p.add_argument("--fixed", required=True, metavar="F", help="the reference volume")
    p.add_argument("--moving", required=True, metavar="MOV", help="the volume to align")
    p.add_argument("--moving-labels", metavar="L", help="integer labels on MOV's grid")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--resample-moving", action="store_true",
                   help="resample MOV (and L) onto F's grid first when the grids differ "
                        "(through world coordinates; no registration)")
    p.add_argument("--prealign", choices=("auto", "on", "off"), default="auto",
                   help="affine pre-alignment (SimpleITK, Mattes MI, centred) before the "
                        "deformable step. auto (default): estimated for every pair, used "
                        "unless the pair is already aligned (same grid and the affine moves "
                        "the head < 1 mm) or it lowers the mutual information; the written "
                        "field is the composed one. off: F and MOV must share one grid")
    p.add_argument("--refine-iterations", type=int, default=None, metavar="N",
                   help="test-time instance optimisation of the network's field (Adam on "
                        "MIND-SSC descriptors, contrast-invariant): steps per batch "
                        "(default 20; 0: off); fewer steps take larger ones (8: about 1.3x "
                        "faster per slice, still above SimpleITK's accuracy on the demo "
                        "shifts)")
    p.add_argument("--refine-3d", nargs="?", choices=("auto", "on", "off"), default="auto",
                   const="on",
                   help="after the slice-wise field, a 3D instance optimisation over the whole "
                        "volume (MIND-SSC, ~30-60 s for a head): moves tissue across slices "
                        "too. auto (default): for the network's pairs that were pre-aligned "
                        "(different subjects or grids: the demo pairs' warped-label Dice "
                        "0.58-0.70 -> 0.78-0.82; --method sitk stays SimpleITK's alone); on "
                        "(or the bare flag): always; off: never. Dropped, with a note, when it "
                        "lowers the mutual information")
    p.add_argument("--keep-learned", action="store_true",
                   help="keep the network's deformation even when it lowers the mutual "
                        "information of F and the warped image (default: flagged and "
                        "dropped, the pre-aligned result is written)")
    p.add_argument("--moving-modality", metavar="NAME",
                   help="MOV's modality (T1w, T2w, PDw, FLAIR; default: read from its file "
                        "name), checked against what the model was trained/adapted on")
    p.add_argument("--fixed-modality", metavar="NAME", help="F's modality, likewise")
    p.add_argument("--batch-size", type=int, default=8, help="slices per batch (default 8)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_device(p, "where the network runs (default: auto)")
    p.set_defaults(func=cmd_reg_apply)

    from uda_core.cli.reg_adapt import add_reg_adapt_parser, add_reg_bench_parser
    add_reg_adapt_parser(reg_sub)
    add_reg_bench_parser(reg_sub)
    return reg_sub
