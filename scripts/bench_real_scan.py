#!/usr/bin/env python
"""The product on a real scan: `uda predict` logic on Colin27, with and without skull.

Colin27 (Debian package ``mricron-data``: /usr/share/mricron/templates/ch2.nii.gz, a real T1w
head with scalp and skull, and ch2bet.nii.gz, the same scan brain-extracted; 181 x 217 x 181 at
1 mm) is a TEST scan: nothing is ever trained or tuned on it. For each model and each of the
two inputs this script runs the library calls behind `uda predict` (read_volume, load_model,
build_network, segment_volume) in a fresh process, so that its wall time and peak memory
(resource.getrusage) are those of one `uda predict` on a 1 mm head, and records:

* brain-mask Dice of the predicted non-background against ch2bet's non-zero region;
* voxels (and mL) labelled tissue outside that region;
* CSF / GM / WM fractions of the predicted tissue (and of the tissue inside ch2bet's mask),
  next to a published range for healthy adults;
* wall time and peak memory of predict.

With ``--variants`` it also scores copies of the scan that bring what real scans bring (noisy
air, scanner intensity scaling, a 20 mm slab, a sagittal 1 x 1 x 3.5 mm acquisition, an oblique
grid, the head pitched by 15 degrees). It writes a figure (axial, coronal and sagittal planes
through the brain's centre: the image in grey, predicted labels coloured and semi-transparent,
ch2bet's outline as a contour) and prints a Markdown section for BENCHMARKS.md. Rerun it
when new models exist::

    .venv/bin/python scripts/bench_real_scan.py --variants \
        --model demo:brain-t1,demo:brain-t1-robust
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = Path("/usr/share/mricron/templates")
INPUTS = (("ch2", "with skull"), ("ch2bet", "skull-stripped"))
TISSUES = ("CSF", "GM", "WM")  # labels 1, 2, 3 of the demo models
# Published range for healthy adults, as fractions of intracranial volume (ICV).
LITERATURE = {"CSF": (0.10, 0.20), "GM": (0.40, 0.50), "WM": (0.35, 0.45)}
LITERATURE_NOTE = (
    "Reference ranges, as fractions of intracranial volume (brain + CSF) in healthy adults: "
    "CSF 0.10-0.20, GM 0.40-0.50, WM 0.35-0.45. Only the CSF share is checked against a "
    "named study here: Matsumae et al. 1996 (J Neurosurg 84:982-991; 49 healthy adults aged "
    "24-80, MR segmentation) report cranial CSF at 11.4% of ICV on average and brain at "
    "88.6%, the extraventricular CSF growing with age. The GM and WM ranges are the "
    "commonly quoted split of the remaining ~0.88 (GM a little above WM in young adults); "
    "for normative GM/ICV and WM/ICV by age and sex see Kruggel 2006 (NeuroImage 30:1-11, "
    "502 healthy adults), whose tables were not read for this note. The fractions depend "
    "on how much extracerebral (subarachnoid) CSF the mask includes: ch2bet's BET mask "
    "keeps only part of it, so its CSF share sits low, and a brain mask without any "
    "extracerebral CSF would push GM and WM up.")


# --------------------------------------------------------------------- one predict (child)

def measure(model: str, image: Path, out: Path, device: str, threads: int) -> dict:
    """`uda predict` on one file in this process: times, peak memory, the mask written."""
    import torch
    torch.set_num_threads(threads)
    from uda_core.engine.device import resolve_device
    from uda_core.io.readers import read_volume
    from uda_core.io.writers import write_volume
    from uda_core.models.bundle import load_model
    from uda_core.models.inference import segment_volume

    start = time.perf_counter()
    dev = resolve_device(device)
    bundle = load_model(model)
    network = bundle.build_network(dev)
    loaded = time.perf_counter()
    volume = read_volume(image)
    labels = segment_volume(bundle, network, volume, dev)
    done = time.perf_counter()
    write_volume(labels.with_data(labels.data, source=None), out, dtype="uint8", overwrite=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"model_load_s": loaded - start, "predict_s": done - loaded,
            "peak_rss_gib": peak_kib / 2**20, "shape": list(volume.shape),
            "skull_stripped_input": bundle.skull_stripped_input}


def run_child(model: str, image: Path, out: Path, device: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_measure", model, str(image),
           str(out), "--device", device, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"predict with {model} on {image.name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------- variants

def _pitch(degrees: float) -> np.ndarray:
    """4x4 world rotation about the x axis (nodding), about the world origin."""
    a = np.deg2rad(degrees)
    rotation = np.eye(4)
    rotation[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return rotation


def variants(data: np.ndarray, brain: np.ndarray, affine: np.ndarray):
    """(name, image, brain mask, affine) of what a real scan brings, made from one scan:
    noisy air, scanner scaling, a 20 mm slab, a sagittal 1 x 1 x 3.5 mm acquisition, an
    oblique (tilted) grid, and the head itself pitched by 15 degrees on a straight grid."""
    from uda_core.io.geometry import resample

    def onto(src_affine, dst_affine, shape):
        image = resample(data, src_affine, dst_affine, shape, order=1)
        mask = resample(brain.astype(np.float32), src_affine, dst_affine, shape, order=0)
        return image, mask > 0.5

    rng = np.random.default_rng(0)
    air = np.abs(rng.normal(0.06, 0.025, data.shape)) * float(np.percentile(data, 99))
    yield "noisy air", np.where(data > 0, data, air).astype(np.float32), brain, affine
    yield "scanner scaling x25 + 300", (data * 25 + 300).astype(np.float32), brain, affine
    k = int(np.mean(np.nonzero(brain)[2]))
    slab = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, k - 10], [0, 0, 0, 1.0]])
    yield "20 mm axial slab", data[:, :, k - 10:k + 10], brain[:, :, k - 10:k + 10], slab
    corners = affine @ np.array([[i, j, m, 1.0] for i in (0, data.shape[0]) for j in
                                 (0, data.shape[1]) for m in (0, data.shape[2])]).T
    hi = corners[:3].max(axis=1)
    lo = corners[:3].min(axis=1)
    pil = np.array([[0, 0, -3.5, hi[0]], [-1, 0, 0, hi[1]], [0, -1, 0, hi[2]], [0, 0, 0, 1.0]])
    shape = (int(hi[1] - lo[1]), int(hi[2] - lo[2]), int((hi[0] - lo[0]) / 3.5))
    yield "sagittal PIL 1x1x3.5 mm", *onto(affine, pil, shape), pil
    tilted = _pitch(15) @ affine
    yield "oblique grid (15 deg)", *onto(affine, tilted, data.shape), tilted
    yield "head pitched 15 deg", *onto(_pitch(15) @ affine, affine, data.shape), affine


def run_variants(models: list[str], images: dict, brain: np.ndarray, affine: np.ndarray,
                 device: str) -> list[dict]:
    """Brain-mask Dice of each model on each variant of each input (in this process)."""
    import torch

    from uda_core.engine.device import resolve_device
    from uda_core.io import Volume
    from uda_core.models.bundle import load_model
    from uda_core.models.inference import segment_volume
    dev = resolve_device(device)
    rows = []
    for model in models:
        bundle = load_model(model)
        network = bundle.build_network(dev)
        for name, what in INPUTS:
            for variant, image, mask, grid in variants(images[name], brain, affine):
                with torch.no_grad():
                    labels = segment_volume(bundle, network, Volume(image, grid), dev)
                assert labels.shape == image.shape and np.allclose(labels.affine, grid)
                dice = brain_scores(labels.data, mask)["dice"]
                rows.append({"model": model, "input": name, "what": what,
                             "variant": variant, "dice": dice})
                print(f"{model} {name} {variant}: Dice {dice:.3f}", file=sys.stderr)
    return rows


def variants_markdown(rows: list[dict]) -> str:
    names = list(dict.fromkeys(r["variant"] for r in rows))
    columns = list(dict.fromkeys((r["model"], r["input"], r["what"]) for r in rows))
    lines = ["", "### What a real scan brings (Colin27 variants)", "",
             "Brain-mask Dice (predicted non-background vs ch2bet's mask carried along) on "
             "copies of the scan stored or positioned differently:", "",
             "| variant | " + " | ".join(f"{m}, {i} ({w})" for m, i, w in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in names:
        cells = [next(r["dice"] for r in rows if r["variant"] == name
                      and (r["model"], r["input"], r["what"]) == c) for c in columns]
        lines.append(f"| {name} | " + " | ".join(f"{d:.3f}" for d in cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------- scores

def brain_scores(labels: np.ndarray, brain: np.ndarray) -> dict:
    """Brain-mask Dice of labels > 0 vs `brain`, tissue outside it, tissue fractions.

    labels: (X, Y, Z) ints (0 background, 1 CSF, 2 GM, 3 WM); brain: bool of the same shape.
    Fractions are of the predicted tissue ("predicted") and of the predicted tissue inside
    `brain` ("in_reference"). Volumes assume 1 mm voxels (mL = voxels / 1000).
    """
    tissue = labels > 0
    both = int(np.count_nonzero(tissue & brain))
    n_tissue, n_brain = int(np.count_nonzero(tissue)), int(np.count_nonzero(brain))
    outside = int(np.count_nonzero(tissue & ~brain))

    def fractions(where: np.ndarray) -> dict:
        counts = [int(np.count_nonzero(where & (labels == k))) for k in (1, 2, 3)]
        total = max(1, sum(counts))
        return {name: c / total for name, c in zip(TISSUES, counts, strict=True)}

    return {"dice": 2 * both / max(1, n_tissue + n_brain), "tissue_voxels": n_tissue,
            "brain_voxels": n_brain, "outside_voxels": outside,
            "missed_brain_voxels": n_brain - both,
            "fractions_predicted": fractions(tissue),
            "fractions_in_reference": fractions(tissue & brain)}


# --------------------------------------------------------------------- figure

def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple]:
    """`data` reoriented to RAS array order (for display), and its voxel sizes."""
    import nibabel as nib
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    return np.asarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])


def write_figure(rows: list[tuple[str, np.ndarray, np.ndarray]], brain: np.ndarray,
                 affine: np.ndarray, path: Path) -> None:
    """One row per (title, image, labels): axial, coronal, sagittal planes through the centre
    of `brain`; labels coloured and semi-transparent; `brain`'s outline as a contour. RAS
    display: right on the right (neurological), anterior up in axial, head up elsewhere."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    mask, zooms = _canonical(brain.astype(np.uint8), affine)
    centre = [int(round(float(np.mean(ix)))) for ix in np.nonzero(mask)]
    colours = ListedColormap(["#3b8bd9", "#e8a33d", "#f2f2f2"])  # CSF, GM, WM
    figure = Figure(figsize=(11, 3.7 * len(rows)), dpi=110, facecolor="black")
    FigureCanvasAgg(figure)
    planes = (("axial", 2), ("coronal", 1), ("sagittal", 0))
    for r, (title, image, labels) in enumerate(rows):
        img, _ = _canonical(image, affine)
        lab, _ = _canonical(labels, affine)
        lo, hi = np.percentile(img, [1, 99.5])
        for c, (name, axis) in enumerate(planes):
            ax = figure.add_subplot(len(rows), 3, 3 * r + c + 1)
            index = [slice(None)] * 3
            index[axis] = slice(centre[axis], centre[axis] + 1)
            cut = tuple(index)
            kept = [a for a in range(3) if a != axis]  # (horizontal, vertical) axes
            extent = (0, img.shape[kept[0]] * zooms[kept[0]],
                      0, img.shape[kept[1]] * zooms[kept[1]])
            show = dict(origin="lower", extent=extent, interpolation="nearest")
            ax.imshow(np.squeeze(img[cut]).T, cmap="gray", vmin=lo, vmax=hi, **show)
            lab2 = np.squeeze(lab[cut]).T.astype(float)
            ax.imshow(np.ma.masked_where(lab2 == 0, lab2), cmap=colours, vmin=0.5, vmax=3.5,
                      alpha=0.45, **show)
            ax.contour(np.squeeze(mask[cut]).T, levels=[0.5], colors="#39ff14",
                       linewidths=0.8, origin="lower", extent=extent)
            ax.set_axis_off()
            ax.set_title(f"{title}: {name}" if c == 0 else name, color="white", fontsize=9)
    figure.text(0.5, 0.005, "labels: CSF blue, GM orange, WM white (semi-transparent); "
                "green: ch2bet brain outline; right on the right, head up",
                color="white", ha="center", va="bottom", fontsize=8)
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, facecolor="black")


# --------------------------------------------------------------------- report

def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return (f"{cpu}, {os.cpu_count()} CPU cores visible, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def markdown(records: list[dict], command: str, threads: int, device: str,
             figure: Path | None) -> str:
    lines = ["## Real scan: Colin27 (mricron-data), with and without skull", "",
             f"Command: `{command}`  ", f"Machine: {machine()}; {threads} torch threads, "
             f"device {device}.  ",
             "Colin27 is a test scan: nothing is trained or tuned on it. Reference brain mask: "
             "ch2bet's non-zero region. Fractions: CSF / GM / WM of the voxels the model "
             "labels tissue (and, in brackets, of those inside the reference mask).", "",
             "| model | input | brain-mask Dice | tissue outside brain | CSF / GM / WM "
             "(in mask) | predict s | peak GiB |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        s = r["scores"]
        fp, fr = s["fractions_predicted"], s["fractions_in_reference"]
        frac = " / ".join(f"{fp[t]:.2f}" for t in TISSUES)
        inside = " / ".join(f"{fr[t]:.2f}" for t in TISSUES)
        lines.append(
            f"| {r['model']} | {r['input']} ({r['what']}) | {s['dice']:.3f} | "
            f"{s['outside_voxels'] / 1e6:.2f} M voxels ({s['outside_voxels'] / 1000:.0f} mL) | "
            f"{frac} ({inside}) | {r['predict_s']:.1f} | {r['peak_rss_gib']:.2f} |")
    lines += ["", LITERATURE_NOTE, "",
              "Predict s: reading the 1 mm head and segmenting it (what `uda predict` prints "
              "per input; loading the model is apart, "
              + ", ".join(f"{r['model_load_s']:.1f} s" for r in records[:1])
              + "); peak GiB: peak resident memory of the whole predict process "
              "(resource.getrusage)."]
    if figure is not None:
        rel = figure.resolve().relative_to(REPO) if figure.resolve().is_relative_to(REPO) \
            else figure
        lines += ["", f"![Colin27 with and without skull]({rel})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo:brain-t1",
                        help="model(s), comma-separated (default demo:brain-t1)")
    parser.add_argument("--templates", type=Path, default=TEMPLATES,
                        help=f"folder holding ch2.nii.gz and ch2bet.nii.gz (default {TEMPLATES})")
    parser.add_argument("--figure", type=Path, default=REPO / "docs" / "real_scan_colin27.png")
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the records as JSON here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (default 2: the target machine's cores)")
    parser.add_argument("--variants", action="store_true",
                        help="also score copies of the scan with noisy air, scanner scaling, a "
                             "slab, a sagittal acquisition, an oblique grid and a pitched head")
    parser.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._measure:
        model, image, out = args._measure
        print(json.dumps(measure(model, Path(image), Path(out), args.device, args.threads)))
        return 0

    import nibabel as nib
    paths = {name: args.templates / f"{name}.nii.gz" for name, _ in INPUTS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        print(f"missing {', '.join(missing)}: install the Debian package mricron-data",
              file=sys.stderr)
        return 1
    reference = nib.load(str(paths["ch2bet"]))
    brain = np.asarray(reference.dataobj) > 0
    affine = reference.affine
    images = {name: np.asarray(nib.load(str(p)).dataobj, dtype=np.float32)
              for name, p in paths.items()}
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    records, rows = [], []
    with tempfile.TemporaryDirectory() as work:
        for model in models:
            for name, what in INPUTS:
                out = Path(work) / f"{model.replace(':', '_')}_{name}_seg.nii.gz"
                result = run_child(model, paths[name], out, args.device, args.threads)
                mask_image = nib.load(str(out))
                labels = np.asarray(mask_image.dataobj)
                if labels.shape != brain.shape or not np.allclose(mask_image.affine, affine):
                    raise SystemExit(f"{model} on {name}: the mask is not on the input grid")
                scores = brain_scores(labels, brain)
                record = dict(model=model, input=name, what=what, scores=scores, **result)
                records.append(record)
                rows.append((f"{model}, {name} ({what})", images[name], labels))
                fp = scores["fractions_predicted"]
                print(f"{model} {name}: Dice {scores['dice']:.3f}, tissue outside the brain "
                      f"{scores['outside_voxels']} voxels, CSF/GM/WM "
                      + "/".join(f"{fp[t]:.2f}" for t in TISSUES)
                      + f", predict {result['predict_s']:.1f} s, peak "
                      f"{result['peak_rss_gib']:.2f} GiB", file=sys.stderr)
    figure = None
    if not args.no_figure:
        figure = args.figure
        write_figure(rows, brain, affine, figure)
    variant_rows = run_variants(models, images, brain, affine, args.device) \
        if args.variants else []
    if args.json:
        args.json.write_text(json.dumps({"runs": records, "variants": variant_rows}, indent=2))
    command = "python scripts/bench_real_scan.py" + (
        f" --model {args.model}" if args.model != "demo:brain-t1" else "") + (
        " --variants" if args.variants else "")
    print(markdown(records, command, args.threads, args.device, figure)
          + (variants_markdown(variant_rows) if variant_rows else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
