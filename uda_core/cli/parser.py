"""The `uda` command line: the same core the desktop app uses, for scripts and clusters.

Errors the user can fix print one line on stderr naming the file and the problem and exit with
status 1 (no traceback unless --debug). Ctrl-C exits with 130, leaving no half-written file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from uda_core import __version__
from uda_core.errors import InputError, UdaError

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_CANCELLED = 130
DEMO_CLASS_NAMES = ("background", "CSF", "GM", "WM")


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                        help="where the network runs; auto uses a CUDA GPU (or Apple MPS) "
                             "when there is one, else the CPU (default: auto)")


def _progress(total: int, desc: str, unit: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                leave=False, disable=None)


# --- uda predict -------------------------------------------------------------------------

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
    network = bundle.build_network(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, target in zip(inputs, targets, strict=True):
        start = time.perf_counter()
        volume = read_volume(source)
        bar = _progress(None, source.name, "slice")
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


# --- uda evaluate ------------------------------------------------------------------------

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


# --- uda demo-data -----------------------------------------------------------------------

def _subject_range(text: str) -> list[int]:
    """'100-102' -> [100, 101, 102]; '3,7' -> [3, 7]."""
    subjects = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            subjects.extend(range(int(lo), int(hi) + 1))
        else:
            subjects.append(int(part))
    return subjects


def cmd_demo_data(args: argparse.Namespace) -> int:
    from uda_core.synth.demo_data import write_demo_data

    domains = tuple(d.strip() for d in args.domains.split(","))
    manifest = write_demo_data(Path(args.out_dir), subjects=args.subjects, domains=domains,
                               spacing_mm=args.spacing, seed=args.seed, progress=True)
    print(f"wrote {len(manifest['subjects'])} subjects x {len(domains)} domains "
          f"to {args.out_dir}")
    return 0


# --- uda train-source --------------------------------------------------------------------

def cmd_train_source(args: argparse.Namespace) -> int:
    from uda_core.engine.device import resolve_device
    from uda_core.io.files import find_labelled_pairs
    from uda_core.models.bundle import save_bundle
    from uda_core.runs.train_segmentation import SourceTrainingConfig, train_source_model

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError("already exists; pass --overwrite to replace it", out)
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
    config = SourceTrainingConfig(epochs=args.epochs, head_epochs=args.head_epochs,
                                  batch_size=args.batch_size, seed=args.seed,
                                  modality=args.modality)
    device = resolve_device(args.device)
    print(f"training on {len(train_pairs)} volumes, validating on {len(val_pairs)} "
          f"({device})", file=sys.stderr)
    bars = {}

    def progress(phase, done, total, scores):
        if not sys.stderr.isatty():  # logs get one plain line per epoch
            print(f"{phase} epoch {done}/{total}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), file=sys.stderr)
            return
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = _progress(total, phase, "epoch")
        bar.set_postfix({k: f"{v:.3f}" for k, v in scores.items()})
        bar.update(1)

    bundle, summary = train_source_model(train_pairs, val_pairs, config, device, progress)
    for bar in bars.values():
        bar.close()
    save_bundle(bundle, out, overwrite=args.overwrite)
    print(f"{out}  validation Dice: network {summary['val_dice']:.3f}, "
          f"early head {summary['val_dice_early_head']:.3f}")
    return 0


# --- uda adapt ---------------------------------------------------------------------------

def _read_settings(path: str | None) -> dict:
    """Settings file: JSON or TOML with method settings at the top level and engine settings
    (steps, batch_size, seed, select_by, ...) under "engine"."""
    if not path:
        return {}
    text_path = Path(path)
    if not text_path.is_file():
        raise InputError("does not exist", text_path)
    try:
        if text_path.suffix.lower() == ".toml":
            import tomllib
            return tomllib.loads(text_path.read_text(encoding="utf-8"))
        return json.loads(text_path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise InputError(f"is not valid {text_path.suffix.lstrip('.').upper() or 'JSON'}: "
                         f"{exc}", text_path) from exc


def cmd_adapt(args: argparse.Namespace) -> int:
    from uda_core.engine.events import FinishedEvent, RollbackEvent, ScoreEvent, StepEvent
    from uda_core.runs.adapt import run_adaptation

    settings = _read_settings(args.config)
    engine_settings = dict(settings.pop("engine", {}))
    for key in ("steps", "seed", "batch_size", "select_by"):
        value = getattr(args, key)
        if value is not None:
            engine_settings[key] = value
    bar = None
    interactive = sys.stderr.isatty()

    def show(event):
        nonlocal bar
        if isinstance(event, StepEvent):
            if bar is None:
                bar = _progress(event.total, args.method, "step")
            bar.set_postfix({k: f"{v:.4f}" for k, v in event.losses.items()}, refresh=False)
            bar.update(1)
            if not interactive and (event.step % 25 == 0 or event.step == event.total):
                losses = ", ".join(f"{k} {v:.4f}" for k, v in event.losses.items())
                print(f"step {event.step}/{event.total} ({event.elapsed_s:.0f} s): {losses}",
                      file=sys.stderr)
        elif isinstance(event, ScoreEvent):
            text = ", ".join(f"{k} {v:.3f}" for k, v in event.scores.items())
            if event.reference:
                text += f"; reference Dice {event.reference['dice']:.3f}"
            _note(bar, f"step {event.step} scores: {text}{'  (best)' if event.is_best else ''}")
        elif isinstance(event, RollbackEvent):
            _note(bar, f"step {event.step}: {event.reason}; rolled back to step "
                       f"{event.to_step} and halved the learning rate")
        elif isinstance(event, FinishedEvent):
            if bar is not None:
                bar.close()
            print(f"{event.status}: {event.message}", file=sys.stderr)

    summary = run_adaptation(
        args.model, args.method, args.targets, args.out, paired=args.paired,
        source=args.source, reference=args.reference, method_settings=settings,
        engine_settings=engine_settings, device=args.device, listeners=[show],
        resume=args.resume, save_masks=not args.no_masks, overwrite=args.overwrite,
        align=args.align)
    print(f"{summary['adapted_model']}  ({summary['status']}, {summary['steps_done']} steps in "
          f"{summary['seconds']:.0f} s, chose step {summary['chosen_step']} by "
          f"{summary['selected_by']})")
    for mask in summary["masks"]:
        print(mask)
    return 0


def _note(bar, text: str) -> None:
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


# --- uda bench ---------------------------------------------------------------------------

def _bench_command(args: argparse.Namespace) -> str:
    """The `uda bench` command line that reproduces this run (for BENCHMARKS.md)."""
    parts = ["uda", "bench"]
    if args.quick:
        parts.append("--quick")
    for flag, value in (("--shifts", args.shifts), ("--methods", args.methods),
                        ("--steps", args.steps), ("--threads", args.threads),
                        ("--device", None if args.device == "auto" else args.device)):
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(parts)


def cmd_bench(args: argparse.Namespace) -> int:
    import os

    from uda_core.bench import (
        BenchConfig,
        quick_config,
        render_markdown,
        run_benchmark,
        update_benchmarks_file,
        write_plot,
    )

    changes = {"device": args.device}
    if args.shifts:
        changes["shifts"] = tuple(s.strip() for s in args.shifts.split(",") if s.strip())
    if args.methods:
        changes["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.work:
        changes["work_dir"] = Path(args.work)
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.reuse:
        if not args.work:
            raise UdaError("--reuse needs --work DIR (the folder of an earlier run)")
        changes["reuse"] = True
    config = quick_config(**changes) if args.quick else BenchConfig(**changes)
    write = (not args.quick) if args.write is None else args.write
    result = run_benchmark(config)
    markdown_path, plot_path = Path(args.benchmarks), Path(args.plot)
    image = Path(os.path.relpath(plot_path.resolve(), markdown_path.resolve().parent))
    section = render_markdown(result, _bench_command(args), image.as_posix())
    print(section, end="")
    if write:
        write_plot(result, plot_path)
        update_benchmarks_file(markdown_path, section)
        print(f"wrote {plot_path} and the section of {markdown_path}", file=sys.stderr)
    return 0


# --- uda models --------------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> int:
    from uda_core.models.bundle import describe, load_model
    from uda_core.models.bundle.builtins import BUILTIN_MODELS, resources_dir
    for name, (relative, summary) in BUILTIN_MODELS.items():
        print(f"{name}: {summary}")
        if not (resources_dir() / relative).is_file():
            print("    not shipped in this version yet")
            continue
        try:
            for line in describe(load_model(name, task=None)):
                print(f"    {line}")
        except UdaError as exc:
            print(f"    not available: {exc.problem}")
    return 0


# --- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uda",
        description="UDA Studio: adapt a pretrained MRI network to new scans without labels.")
    parser.add_argument("--version", action="version", version=f"uda-studio {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something goes wrong")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    _add_device(p)
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

    p = sub.add_parser("demo-data", help="write the demo volumes (real anatomy, simulated "
                                         "scanners)",
                       description="Simulate subjects from the MNI ICBM152 2009a template "
                                   "in several MRI domains, with labels, as NIfTI: "
                                   "DIR/<domain>/sub-XXX_<domain>.nii.gz and "
                                   "sub-XXX_labels.nii.gz.")
    p.add_argument("out_dir", metavar="DIR")
    p.add_argument("--subjects", type=_subject_range, default=_subject_range("100-102"),
                   help="subject numbers, e.g. 0-11 or 100,101 (default 100-102); each "
                        "number is one fixed random anatomy")
    p.add_argument("--domains", default="t1,protocol,t2,pd",
                   help="comma-separated domains (default t1,protocol,t2,pd)")
    p.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("train-source", help="train a segmentation model on labelled data",
                       description="Supervised training of a 2D U-Net on labelled volumes "
                                   "(each image needs <prefix>_labels.nii.gz beside it), then "
                                   "its class-ratio prior and early-feature head; writes a "
                                   "model bundle.")
    p.add_argument("--out", required=True, help="the model bundle to write (.pt)")
    p.add_argument("--val", nargs="+", help="validation volumes or folders (default: hold "
                                            "out the last sixth of DATA)")
    p.add_argument("--epochs", type=int, default=30, help="network epochs (default 30)")
    p.add_argument("--head-epochs", type=int, default=8, help="early-head epochs (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="default 16")
    p.add_argument("--modality", default="T1w", help="input modality recorded in the bundle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_device(p)
    p.add_argument("data", nargs="+", metavar="DATA", help="image files or folders")
    p.set_defaults(func=cmd_train_source)

    from uda_core.methods.catalogue import SUMMARIES as methods
    p = sub.add_parser(
        "adapt", help="adapt a model to unlabelled target scans",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Adapt MODEL to the unlabelled TARGET volumes with one method; writes "
                    "OUT/adapted.pt, OUT/metrics.jsonl, OUT/run.json and OUT/masks/.\n\n"
                    "methods:\n" + "\n".join(f"  {k:<12} {v}" for k, v in methods.items()))
    p.add_argument("--model", required=True, help="model bundle or built-in name")
    p.add_argument("--method", required=True, choices=list(methods), metavar="NAME",
                   help="one of: " + ", ".join(methods))
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
    p.add_argument("--batch-size", type=int, help="target slices per update (default 16)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--select-by", help="label-free score that picks the saved checkpoint")
    p.add_argument("--config", help="JSON/TOML file with method settings (and an \"engine\" "
                                    "table)")
    p.add_argument("--resume", help="continue from OUT/checkpoints/last.pt or another "
                                    "checkpoint")
    p.add_argument("--align", choices=["auto", "world", "register"], default="auto",
                   help="how --paired images are aligned to targets (default auto)")
    p.add_argument("--no-masks", action="store_true", help="do not write OUT/masks/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing adapted.pt")
    _add_device(p)
    p.add_argument("targets", nargs="+", metavar="TARGET", help="unlabelled target volumes")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser(
        "bench", help="benchmark the adaptation methods on the demo shifts",
        description="For each demo shift (protocol, t2, pd) and each method that applies: "
                    "Dice and HD95 of held-out subjects 100-102 before and after adaptation, "
                    "an oracle (the source network fine-tuned on labelled target data), the "
                    "share of the gap closed, wall time, steps/s and peak memory, plus the "
                    "engine's overhead against a bare PyTorch loop. Prints the Markdown "
                    "section; --write puts it into BENCHMARKS.md with a plot. The full run "
                    "takes 1 to 1.5 hours on 2 CPU cores.")
    p.add_argument("--quick", action="store_true",
                   help="a tiny version (protocol; tent, adabn; one 4 mm subject; 3 steps) "
                        "that checks the machinery in well under a minute")
    p.add_argument("--shifts", help="comma-separated shifts (default protocol,t2,pd)")
    p.add_argument("--methods", help="comma-separated methods (default: every method that "
                                     "applies to a shift)")
    p.add_argument("--steps", type=int, help="updates per run for every method (default: "
                                             "each method's own default)")
    p.add_argument("--threads", type=int,
                   help="torch threads in every process (default: torch's choice, 1 with "
                        "--quick); 1 is far faster when other work shares the CPU cores")
    p.add_argument("--work", metavar="DIR", help="keep the generated data, oracles and runs "
                                                 "here (default: a temporary folder); data "
                                                 "already there is reused")
    p.add_argument("--reuse", action="store_true",
                   help="reuse the oracles and runs an earlier `uda bench --work DIR` finished "
                        "with the same settings (to resume an interrupted benchmark)")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write the section into --benchmarks and the plot to --plot "
                        "(default: on for the full run, off with --quick)")
    p.add_argument("--benchmarks", default="BENCHMARKS.md",
                   help="Markdown file whose bench:segmentation section is replaced "
                        "(default BENCHMARKS.md)")
    p.add_argument("--plot", default="docs/bench_segmentation.png",
                   help="PNG of the Dice per method and shift (default "
                        "docs/bench_segmentation.png)")
    _add_device(p)
    p.set_defaults(func=cmd_bench)

    from uda_core.cli.reg import add_reg_parser
    add_reg_parser(sub)

    p = sub.add_parser("models", help="list the built-in models")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UdaError as exc:
        if args.debug:
            raise
        print(f"uda {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"uda {args.command}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except MemoryError:
        if args.debug:
            raise
        print(f"uda {args.command}: error: out of memory", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if args.debug:
            raise
        print(f"uda {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
