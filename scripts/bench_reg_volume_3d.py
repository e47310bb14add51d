"""Whole-volume registration time and accuracy: `uda reg apply` against SimpleITK in 3D (issue 13).

For each pair (fixed: the T1 of demo subject A, moving: the --domain image of subject B, with
B's tissue labels; the demo volumes, 2 mm, or --data for another demo folder), runs

* ``learned``: `uda reg apply --model MODEL` with its defaults (3D affine pre-alignment, then
  the network + instance optimisation slice by slice), the whole command timed;
* ``sitk-3d``: SimpleITK alone, in 3D: the pre-alignment of `uda reg apply`
  (:func:`~uda_core.grid.coregister.prealign_transform`), then a cubic B-spline transform
  over the whole volume (Mattes MI, 32 bins, 20 % of the voxels sampled, gradient descent
  with line search, at most ITERATIONS per level, shrink 4/2/1 with the mesh refined x2
  per level to MESH cells per axis: the 2D baseline's settings carried to 3D), the labels
  resampled through the composed transform (nearest neighbour);

and prints the seconds of each and the warped-label Dice (mean of CSF, GM, WM against A's
labels) before and after. Usage:

    PYTHONPATH=. python scripts/bench_reg_volume_3d.py [--domain t2] [--model demo:reg-t1]
        [--pairs 100:101] [--mesh 8] [--iterations 100] [--data DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from uda_core.cli import main
from uda_core.grid.coregister import prealign_transform


def dice(a: np.ndarray, b: np.ndarray, classes=(1, 2, 3)) -> float:
    return float(np.mean([2 * ((a == c) & (b == c)).sum()
                          / max((a == c).sum() + (b == c).sum(), 1) for c in classes]))


def sitk_3d(fixed: sitk.Image, moving: sitk.Image, mesh: int, iterations: int,
            threads: int) -> sitk.Transform:
    """The pre-alignment of `uda reg apply` (coregister.prealign_transform), then a B-spline,
    all SimpleITK in 3D; returns the composed transform (fixed points -> moving points)."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    affine = prealign_transform(fixed, moving, seed=0)
    bspline = sitk.BSplineTransformInitializer(fixed, [max(1, mesh // 4)] * 3, order=3)
    method = sitk.ImageRegistrationMethod()
    shrink = (4, 2, 1)
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentagePerLevel([min(1.0, 0.2 * f**3) for f in shrink], 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetOptimizerAsGradientDescentLineSearch(
        learningRate=5.0, numberOfIterations=int(iterations), convergenceMinimumValue=1e-4,
        convergenceWindowSize=5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetMovingInitialTransform(affine)
    method.SetInitialTransformAsBSpline(bspline, inPlace=True, scaleFactors=[1, 2, 4])
    deformable = method.Execute(fixed, moving)
    return sitk.CompositeTransform([affine, deformable])


def learned(fixed: Path, moving: Path, labels: Path, model: str) -> tuple[float, Path, str]:
    out = Path(tempfile.mkdtemp(prefix="reg3d_"))
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["reg", "apply", "--model", model, "--fixed", str(fixed), "--moving",
                     str(moving), "--moving-labels", str(labels), "--out", str(out),
                     "--device", "cpu"])
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"uda reg apply failed: {err.getvalue().strip()}")
    return seconds, next(out.glob("*_labels_warped.nii.gz")), err.getvalue()


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="t2")
    parser.add_argument("--model", default="demo:reg-t1")
    parser.add_argument("--pairs", default="100:101")
    parser.add_argument("--mesh", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--data", default=None, help="a demo folder (default resources/demo)")
    parser.add_argument("--threads", type=int, default=2, help="SimpleITK threads")
    args = parser.parse_args()
    from uda_core.tasks.registration_data import demo_files

    for item in args.pairs.split(","):
        a, b = (int(s) for s in item.split(":"))
        t1, _, labels_a = demo_files("t1", (a,), args.data)
        _, other, labels_b = demo_files(args.domain, (b,), args.data)
        fixed_labels = sitk.ReadImage(str(labels_a[0]))
        reference = sitk.GetArrayFromImage(fixed_labels)
        moving_labels = sitk.ReadImage(str(labels_b[0]))
        identity = sitk.Resample(moving_labels, fixed_labels, sitk.Transform(),
                                 sitk.sitkNearestNeighbor, 0)
        before = dice(reference, sitk.GetArrayFromImage(identity))

        seconds, warped_path, notes = learned(t1[0], other[0], labels_b[0], args.model)
        after = dice(reference, sitk.GetArrayFromImage(sitk.ReadImage(str(warped_path))))
        print(f"T1 {a} <- {args.domain} {b} ({reference.shape[::-1]} voxels): before {before:.3f}"
              f"; learned {after:.3f} in {seconds:.1f} s (the whole command)", flush=True)

        fixed = sitk.ReadImage(str(t1[0]), sitk.sitkFloat32)
        moving = sitk.ReadImage(str(other[0]), sitk.sitkFloat32)
        start = time.perf_counter()
        transform = sitk_3d(fixed, moving, args.mesh, args.iterations, args.threads)
        warped = sitk.Resample(moving_labels, fixed_labels, transform,
                               sitk.sitkNearestNeighbor, 0)
        seconds = time.perf_counter() - start
        print(f"  sitk-3d (mesh {args.mesh}^3, {args.iterations} iterations per level, "
              f"{args.threads} threads): {dice(reference, sitk.GetArrayFromImage(warped)):.3f}"
              f" in {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main_bench()
