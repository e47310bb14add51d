"""`uda bench`: the segmentation benchmark (shifts x methods), into BENCHMARKS.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uda_core.cli.common import add_device
from uda_core.errors import UdaError


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
    parts += [flag for flag, on in (("--one-seed", args.one_seed),
                                    ("--no-overhead", args.no_overhead)) if on]
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
    if args.one_seed:
        changes["multi_seed"] = {}
    if args.no_overhead:
        changes["overhead_steps"] = 0
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark the adaptation methods on the demo shifts",
        description="For each demo shift (protocol, mprage, highfield, t2, pd) and each "
                    "method that applies (a '+std' name: the method on intensity-standardised "
                    "targets, T1w shifts only): "
                    "Dice and HD95 of held-out subjects 100-105 before and after adaptation, "
                    "an oracle (the source network fine-tuned on labelled target data), the "
                    "share of the gap closed, wall time, steps/s and peak memory, plus the "
                    "engine's overhead against a bare PyTorch loop. Prints the Markdown "
                    "section; --write puts it into BENCHMARKS.md with a plot. The full run "
                    "takes hours on 2 CPU cores.")
    p.add_argument("--quick", action="store_true",
                   help="a tiny version (protocol; adabn, adabn+std; one 4 mm subject; 3 steps) "
                        "that checks the machinery in well under a minute")
    p.add_argument("--shifts",
                   help="comma-separated shifts (default protocol,mprage,highfield,t2,pd)")
    p.add_argument("--methods", help="comma-separated methods, each optionally with '+std' "
                                     "(default: every benchmark method that applies to a "
                                     "shift)")
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
    p.add_argument("--one-seed", action="store_true",
                   help="seed 0 only, also for the runs that otherwise repeat over seeds")
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the engine-overhead measurement")
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                   help="write the section into --benchmarks and the plot to --plot "
                        "(default: on for the full run, off with --quick)")
    p.add_argument("--benchmarks", default="BENCHMARKS.md",
                   help="Markdown file whose bench:segmentation section is replaced "
                        "(default BENCHMARKS.md)")
    p.add_argument("--plot", default="docs/bench_segmentation.png",
                   help="PNG of the Dice per method and shift (default "
                        "docs/bench_segmentation.png)")
    add_device(p)
    p.set_defaults(func=cmd_bench)
