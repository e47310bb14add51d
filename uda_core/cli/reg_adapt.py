"""`uda reg adapt` and `uda reg bench`: parsers and commands, hooked into `uda reg` by
uda_core/cli/reg.py::

    from uda_core.cli.reg_adapt import add_reg_adapt_parser, add_reg_bench_parser
    add_reg_adapt_parser(reg_subparsers)   # sets func=cmd_reg_adapt
    add_reg_bench_parser(reg_subparsers)   # sets func=cmd_reg_bench

Errors follow `uda`'s rules (UdaError -> one line, exit 1). The first Ctrl-C during
`uda reg adapt` cancels the run cleanly: the engine stops after the current step, writes
OUT/checkpoints/last.pt, the best weights so far go to OUT/adapted.pt and the command exits
with 130 (a second Ctrl-C interrupts at once).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uda_core.cli.common import (
    ConsoleProgress,
    cancel_on_interrupt,
    engine_settings_from,
    finish_adaptation,
    read_settings,
    subject_range,
)


def cmd_reg_adapt(args: argparse.Namespace) -> int:
    from uda_core.engine import RunControl
    from uda_core.runs.adapt_registration import run_reg_adaptation

    settings = read_settings(args.config)
    engine_settings = engine_settings_from(settings, args, ("steps", "seed", "select_by"))
    control = RunControl()
    with cancel_on_interrupt(control):
        summary = run_reg_adaptation(
            args.model, args.out, discrepancy=args.discrepancy, fixed=args.fixed,
            moving=args.moving, labels=args.labels, aligned=args.aligned,
            demo_domain=args.demo_domain, method_settings=settings,
            engine_settings=engine_settings, device=args.device,
            listeners=[ConsoleProgress(f"mcd-{args.discrepancy}")], control=control,
            resume=args.resume, overwrite=args.overwrite,
            moving_modality=args.moving_modality)
    return finish_adaptation(summary, verb="kept")


def add_reg_adapt_parser(subparsers) -> argparse.ArgumentParser:
    """Add `adapt` to the `uda reg` subparsers; returns its parser."""
    from uda_core.methods.catalogue import REG_DISCREPANCIES as DISCREPANCIES
    p = subparsers.add_parser(
        "adapt", help="adapt a registration model to another modality (MCD, no labels)",
        description="Maximum classifier discrepancy between the registration network's two "
                    "heads, from T1-T1 pairs (source, supervised by known random "
                    "deformations) to T1-other-modality pairs (target, unlabelled). Writes "
                    "OUT/adapted.pt, OUT/metrics.jsonl, OUT/run.json and OUT/checkpoints/. "
                    "Without --fixed/--moving it adapts to the demo subjects 100-102 "
                    "(resources/demo: T1 fixed, --demo-domain moving). Ctrl-C cancels "
                    "cleanly and leaves a checkpoint to --resume from.")
    p.add_argument("--model", default="demo:reg-t1",
                   help="registration bundle or built-in name (default demo:reg-t1)")
    p.add_argument("--discrepancy", choices=list(DISCREPANCIES), default="pemd",
                   help="l1 (MCD), swd (sliced Wasserstein) or pemd (projected EMD; "
                        "default)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--fixed", nargs="+", metavar="IMAGE",
                   help="fixed volumes in the model's modality (T1w), one per pair")
    p.add_argument("--moving", nargs="+", metavar="IMAGE",
                   help="moving volumes of another modality, one per --fixed, aligned with "
                        "it in world space (e.g. the same session's T2)")
    p.add_argument("--labels", nargs="+", metavar="LABELS",
                   help="tissue labels of each --fixed volume (optional, reference only)")
    p.add_argument("--aligned", action="store_true",
                   help="the pairs show the same anatomy at the same world coordinates: "
                        "report reference accuracy/endpoint error (never used for choices)")
    p.add_argument("--moving-modality", metavar="NAME",
                   help="modality of the --moving images (T1w, T2w, PDw, FLAIR), recorded in "
                        "the adapted model; default: read from their file names")
    p.add_argument("--demo-domain", default="t2", choices=["t2", "pd"],
                   help="moving modality of the demo pairs when no --fixed is given "
                        "(default t2)")
    p.add_argument("--steps", type=int, help="MCD steps (default 300)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--select-by", help="label-free score that picks the kept step: "
                                       "mutual_info (default), discrepancy, entropy or last")
    p.add_argument("--config", help="JSON/TOML file with MCD settings (and an \"engine\" "
                                    "table)")
    p.add_argument("--resume", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing adapted.pt")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="where the network runs (default auto)")
    p.set_defaults(func=cmd_reg_adapt)
    return p


# --- uda reg bench -------------------------------------------------------------------------

def cmd_reg_bench(args: argparse.Namespace) -> int:
    import os

    from uda_core.bench.registration import RegBenchConfig, quick_reg_config, run_reg_benchmark
    from uda_core.bench.registration_report import (
        render_reg_markdown,
        update_reg_section,
        write_overlay,
    )

    changes = {"device": args.device}
    for name in ("model", "steps", "work_dir", "threads", "workers"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = Path(value) if name == "work_dir" else value
    if args.shifts:
        changes["shifts"] = tuple(s.strip() for s in args.shifts.split(",") if s.strip())
    if args.methods:
        changes["methods"] = tuple(s.strip() for s in args.methods.split(",") if s.strip())
    if args.seeds:
        changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.subjects:
        changes["subjects"] = tuple(subject_range(args.subjects))
    if args.settings:
        changes["method_settings"] = json.loads(args.settings)
    if args.refine:
        changes["refine"] = json.loads(args.refine)
    config = quick_reg_config(**changes) if args.quick else RegBenchConfig(**changes)
    result = run_reg_benchmark(config, log=lambda line: print(line, file=sys.stderr,
                                                              flush=True))
    markdown_path, plot_path = Path(args.benchmarks), Path(args.plot)
    image = Path(os.path.relpath(plot_path.resolve(), markdown_path.resolve().parent))
    section = render_reg_markdown(result, _bench_command(args), image.as_posix())
    print(section, end="")
    write = (not args.quick) if args.write is None else args.write
    if write:
        write_overlay(result, plot_path)
        update_reg_section(markdown_path, section)
        print(f"wrote {plot_path} and the registration section of {markdown_path}",
              file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2))
    return 0


def _bench_command(args: argparse.Namespace) -> str:
    parts = ["uda", "reg", "bench"] + (["--quick"] if args.quick else [])
    for flag, value in (("--shifts", args.shifts), ("--methods", args.methods),
                        ("--steps", args.steps), ("--seeds", args.seeds),
                        ("--subjects", args.subjects), ("--settings", args.settings),
                        ("--refine", args.refine),
                        ("--threads", args.threads), ("--workers", args.workers),
                        ("--model", args.model),
                        ("--device", None if args.device == "auto" else args.device)):
        if value is not None:
            parts += [flag, f"'{value}'" if flag in ("--settings", "--refine") else str(value)]
    return " ".join(parts)


def add_reg_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add `bench` to the `uda reg` subparsers; returns its parser."""
    p = subparsers.add_parser(
        "bench", help="benchmark registration adaptation against SimpleITK",
        description="On T1->T2 and T1->PD pairs of the held-out demo subjects 100-102 (T1 "
                    "fixed, the other modality moving, known random deformations): no "
                    "adaptation vs MCD with l1 / swd / pemd (2 seeds) vs SimpleITK B-spline "
                    "+ Mattes MI. Registration accuracy, endpoint error (mm), warped-label "
                    "Dice, folding and time per pair. Prints the Markdown section; the full "
                    "run writes it into BENCHMARKS.md with an overlay picture.")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run (one subject, T1->T2, 2 steps, few pairs) in seconds")
    p.add_argument("--shifts", help="comma-separated moving domains (default t2,pd)")
    p.add_argument("--methods", help="comma-separated, default none,io,l1,swd,pemd,sitk (io: "
                                     "the model + test-time instance optimisation, and each "
                                     "adapted model + it: the `uda reg apply` default)")
    p.add_argument("--steps", type=int, help="MCD steps per run")
    p.add_argument("--seeds", help="comma-separated seeds of the adapted runs (default 0,1)")
    p.add_argument("--subjects", help="demo subjects, e.g. 100-102 (default); tune on 40-42")
    p.add_argument("--settings", help="JSON of MCD settings for every run, e.g. "
                                      "'{\"lr\": 1e-3}'")
    p.add_argument("--refine", help="JSON of instance-optimisation settings of the io rows, "
                                    "e.g. '{\"iterations\": 20, \"lr\": 0.2}'")
    p.add_argument("--model", help="registration bundle (default demo:reg-t1)")
    p.add_argument("--threads", type=int, help="torch threads per process (default 1)")
    p.add_argument("--workers", type=int,
                   help="adaptation runs in parallel processes (default 2; 1 with --quick)")
    p.add_argument("--work-dir", dest="work_dir", help="keep the generated data here")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write BENCHMARKS.md and the picture (default: on for the full run)")
    p.add_argument("--benchmarks", default="BENCHMARKS.md",
                   help="Markdown file whose bench:registration section is replaced")
    p.add_argument("--plot", default="docs/bench_registration.png",
                   help="overlay picture (default docs/bench_registration.png)")
    p.add_argument("--json", help="also write the raw results as JSON here")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="where the networks run (default auto)")
    p.set_defaults(func=cmd_reg_bench)
    return p
