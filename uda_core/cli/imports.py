"""`uda import-model`: a MONAI bundle or nnU-Net v2 result folder (or a zip of one) converted
into a UDA Studio model bundle, without running any of its code."""

from __future__ import annotations

import argparse


def cmd_import_model(args: argparse.Namespace) -> int:
    from uda_core.models.bundle import describe, save_bundle
    from uda_core.models.imports import import_model

    bundle = import_model(args.path, fold=args.fold)
    path = save_bundle(bundle, args.out, overwrite=args.overwrite)
    print(f"{path}  (imported from {bundle.imported['format'] if bundle.imported else '?'})")
    for line in describe(bundle):
        print(f"  {line}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-model", help="convert a MONAI bundle or nnU-Net folder",
                       description="Convert a MONAI bundle (configs/ + models/) or an nnU-Net v2 "
                                   "result folder (plans.json, dataset.json, fold_k/), or a zip "
                                   "of either, into a UDA Studio model bundle. Its configs are "
                                   "read as data: no expression, script or pickle from it runs. "
                                   "Declared sizes are capped before anything is built: numbers "
                                   "in the network's arguments <= 8192, about 1e9 parameters, "
                                   "windows <= 1024 voxels a side and 2^24 in all, weight "
                                   "tensors <= 1e9 values each.")
    p.add_argument("path", metavar="PATH", help="the bundle folder, result folder or zip")
    p.add_argument("--out", required=True, help="the model bundle to write (.pt)")
    p.add_argument("--fold", help="nnU-Net: which fold_<k> to take (default: the lowest)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_import_model)
