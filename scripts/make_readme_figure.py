"""The README's picture: a target scan, the mask before and after adaptation, the reference, and
the run's loss curves, from a `uda bench --work DIR` folder.

    .venv/bin/python scripts/make_readme_figure.py --work /tmp/bench --shift t2 --run ddm-seed0

--work may also be any folder laid out the same way: data/<shift>/ (the scans and labels) and
runs/<shift>/<run>/ (a `uda adapt` run folder: masks/ and metrics.jsonl); the README's figure
of 2026-12-01 links the app demo run's folder there.

Writes docs/adaptation_<shift>_<run>.png (or --out): the axial slice with the most white
matter, shown as stored (RAS: the patient's right on the image's right, anterior at the top).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from uda_core.engine.device import resolve_device
from uda_core.io.atomic import atomic_output
from uda_core.io.readers import read_labels, read_volume
from uda_core.models.bundle import load_model
from uda_core.models.inference import segment_volume

LABEL_COLOURS = ListedColormap(["#000000", "#3b82f6", "#9ca3af", "#facc15"])


def _axial(array: np.ndarray, z: int) -> np.ndarray:
    return np.rot90(array[:, :, z])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the folder given to uda bench --work")
    parser.add_argument("--shift", default="t2")
    parser.add_argument("--run", default="ddm-seed0", help="runs/<shift>/<run> in --work")
    parser.add_argument("--subject", default="sub-100")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(args.work)
    stem = f"{args.subject}_{args.shift}"
    scan = read_volume(work / "data" / args.shift / f"{stem}.nii.gz")
    reference = read_labels(work / "data" / args.shift / f"{args.subject}_labels.nii.gz")
    run_dir = work / "runs" / args.shift / args.run
    adapted = read_labels(run_dir / "masks" / f"{stem}_seg.nii.gz")
    bundle = load_model("demo:brain-t1")
    device = resolve_device("cpu")
    before = segment_volume(bundle, bundle.build_network(device), scan, device)
    z = int(np.argmax((reference.data == 3).sum(axis=(0, 1))))  # the slice with most WM

    figure = Figure(figsize=(13, 3.2), dpi=110)
    panels = [(scan.data, "target scan", "gray"), (before.data, "before adaptation", None),
              (adapted.data, f"after {args.run.split('-')[0]}", None),
              (reference.data, "reference (not used)", None)]
    for i, (array, title, cmap) in enumerate(panels):
        ax = figure.add_subplot(1, 5, i + 1)
        if cmap:
            ax.imshow(_axial(array, z), cmap=cmap)
        else:
            ax.imshow(_axial(array, z), cmap=LABEL_COLOURS, vmin=0, vmax=3,
                      interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    ax = figure.add_subplot(1, 5, 5)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if any(k.startswith("loss/") for k in r)]
    for key in sorted({k for r in steps for k in r if k.startswith("loss/")}):
        xs = [r["step"] for r in steps if key in r]
        ys = np.array([r[key] for r in steps if key in r])
        ax.plot(xs, ys, alpha=0.25, linewidth=0.8)
        smooth = np.convolve(ys, np.ones(15) / 15, mode="valid") if len(ys) > 15 else ys
        ax.plot(xs[len(xs) - len(smooth):], smooth, label=key[5:],
                color=ax.lines[-1].get_color())
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("losses", fontsize=10)
    figure.suptitle(f"{args.shift} target, {args.run}: CSF (blue), grey matter (grey), "
                    "white matter (yellow)", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    out = Path(args.out or f"docs/adaptation_{args.shift}_{args.run}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, overwrite=True) as tmp:
        FigureCanvasAgg(figure).print_png(str(tmp))
    print(out)


if __name__ == "__main__":
    main()
