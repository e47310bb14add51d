"""`uda demo-data` (the simulated demo volumes) and `uda models` (the built-in models)."""

from __future__ import annotations

import argparse
from pathlib import Path

from uda_core.cli.common import subject_range
from uda_core.errors import UdaError


def cmd_demo_data(args: argparse.Namespace) -> int:
    from uda_core.synth.demo_data import write_demo_data

    domains = tuple(d.strip() for d in args.domains.split(","))
    manifest = write_demo_data(Path(args.out_dir), subjects=args.subjects, domains=domains,
                               spacing_mm=args.spacing, seed=args.seed, progress=True,
                               heads=args.heads)
    print(f"wrote {len(manifest['subjects'])} subjects x {len(domains)} domains "
          f"({'whole heads' if args.heads else 'brains only'}) to {args.out_dir}")
    return 0


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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="write the demo volumes (real anatomy, simulated "
                                         "scanners)",
                       description="Simulate subjects from the MNI ICBM152 2009a template "
                                   "in several MRI domains, with labels, as NIfTI: "
                                   "DIR/<domain>/sub-XXX_<domain>.nii.gz and "
                                   "sub-XXX_labels.nii.gz.")
    p.add_argument("out_dir", metavar="DIR")
    p.add_argument("--subjects", type=subject_range, default=subject_range("100-102"),
                   help="subject numbers, e.g. 0-11 or 100,101 (default 100-102); each "
                        "number is one fixed random anatomy")
    p.add_argument("--domains", default="t1,protocol,t2,pd",
                   help="comma-separated domains (default t1,protocol,t2,pd)")
    p.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--heads", action=argparse.BooleanOptionalAction, default=True,
                   help="simulate whole heads: scalp, skull, fat, eyes, neck and noisy air "
                        "around the brain, all labelled background (default); --no-heads: "
                        "brains alone, as after skull stripping")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("models", help="list the built-in models")
    p.set_defaults(func=cmd_models)
