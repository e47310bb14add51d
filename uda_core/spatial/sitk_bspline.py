"""The classical anchor: SimpleITK B-spline registration of one 2D pair (Mattes MI).

Used to compare the learned discrete registration with a classical method on the same pairs,
for accuracy and run time (METHODS.md section 6). Our recipe: a cubic B-spline transform over
the fixed slice (BSplineTransformInitializer), Mattes mutual information on a random sample of
the fixed pixels, gradient descent with a line search (parameter scales from physical shift),
three resolution levels (shrink 4, 2, 1; Gaussian smoothing sigma 2, 1, 0 pixels), linear
interpolation. Two choices of ours, made on 64 x 64 blob pairs with known smooth
deformations (without them some pairs ended no better than unregistered):

- the mesh is refined with the levels (a quarter of `mesh_size` at the coarsest level, then a
  half, then all of it), so coarse levels fit coarse motion with few parameters;
- every level samples the same NUMBER of pixels (`sampling` times the full slice's pixel
  count, capped at all pixels of the level), instead of the same share: a 20 % share of a
  16 x 16 coarse image is ~50 pixels, too few for a 32-bin histogram.

L-BFGS-B was tried first: SimpleITK 2.5 rejects it together with mesh refinement (its scales
keep the coarse mesh's size), and with a fixed 8 x 8 mesh it left several times the error of
the recipe above.

Conventions: slices are numpy (H, W) arrays, H = rows, W = columns; SimpleITK sees them as
images whose x axis is the columns and y axis the rows (GetImageFromArray), with pixel (0, 0)
at the origin (0, 0) mm and the given pixel spacing. The returned displacement is in PIXELS,
channels (dy, dx) = (rows, columns), and warps the moving slice backwards:
warped(y, x) = moving(y + dy, x + dx) -- ITK's fixed -> moving transform, converted from its
(x, y) millimetres.
"""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

__all__ = ["register_bspline_2d"]

_SHRINK = (4, 2, 1)  # image shrink factor per resolution level
# Mesh scale factor per level, by how much the mesh can be refined overall.
_REFINE_STEPS = {4: [1, 2, 4], 2: [1, 1, 2], 1: [1, 1, 1]}


def _to_sitk(array: np.ndarray, spacing_xy) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(spacing_xy)
    image.SetOrigin((0.0, 0.0))
    return image


def register_bspline_2d(fixed: np.ndarray, moving: np.ndarray, *, mesh_size=(8, 8),
                        bins: int = 32, iterations: int = 100, sampling: float = 0.2,
                        seed: int = 1, spacing=(2.0, 2.0), threads: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    """Deformable registration of `moving` onto `fixed` with a B-spline transform.

    Args:
        fixed: (H, W) reference slice (any real dtype; intensities need not match `moving`'s:
            mutual information).
        moving: (H, W) slice to align, same shape (the pair shares one pixel grid).
        mesh_size: (rows, columns) cells of the final cubic B-spline mesh over the slice
            (control points: mesh + 3 per axis). Coarser levels use a quarter and a half of
            it when both sizes are multiples of 4 (of 2: half, half, all; else all at every
            level).
        bins: Mattes mutual-information histogram bins.
        iterations: most gradient-descent iterations per resolution level.
        sampling: sampled pixels for the metric, as a share of the full-size slice's pixels,
            0 < f <= 1; each level samples that many at random (all of a level's pixels when
            it has fewer); 1 = every pixel at every level.
        seed: sampling seed, >= 1 (SimpleITK reads 0 as "seed from the clock").
        spacing: (row, column) pixel size in mm, as on the model grid; it only sets the
            physical units ITK works in (the result is returned in pixels).
        threads: SimpleITK threads for this registration; None keeps the global default.

    Returns:
        (warped, disp, seconds): warped (H, W) float32 = `moving` resampled through the
        transform (linear; sample points outside take the nearest edge pixel), disp
        (2, H, W) float32 displacement in pixels (dy, dx) on the fixed grid, and the wall-clock
        seconds of the registration (optimisation plus the field and the resampling).
    """
    fixed = np.asarray(fixed)
    moving = np.asarray(moving)
    if fixed.ndim != 2 or moving.shape != fixed.shape:
        raise ValueError(f"need two (H, W) slices of one shape; got {fixed.shape} and "
                         f"{moving.shape}")
    if not 0.0 < sampling <= 1.0:
        raise ValueError(f"sampling must be in (0, 1], got {sampling}")
    if int(seed) < 1:
        raise ValueError(f"seed must be >= 1 (SimpleITK reads 0 as the clock), got {seed}")
    row_mm, col_mm = (float(s) for s in spacing)
    if row_mm <= 0 or col_mm <= 0:
        raise ValueError(f"spacing must be positive, got {tuple(spacing)}")
    mesh_rows, mesh_cols = (int(m) for m in mesh_size)
    if mesh_rows < 1 or mesh_cols < 1:
        raise ValueError(f"mesh_size must be positive, got {tuple(mesh_size)}")

    start = time.perf_counter()
    fixed_image = _to_sitk(fixed, (col_mm, row_mm))  # ITK order: (x, y) = (columns, rows)
    moving_image = _to_sitk(moving, (col_mm, row_mm))
    # Refine the mesh x2 per level where the sizes allow it, ending at exactly `mesh_size`.
    refine = next(f for f in (4, 2, 1) if mesh_rows % f == 0 and mesh_cols % f == 0)
    transform = sitk.BSplineTransformInitializer(
        fixed_image, transformDomainMeshSize=[mesh_cols // refine, mesh_rows // refine],
        order=3)

    method = sitk.ImageRegistrationMethod()
    if threads is not None:
        method.SetNumberOfThreads(int(threads))
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    if sampling < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        # The same number of samples at every level (a share of the full-size slice).
        shares = [min(1.0, float(sampling) * f * f) for f in _SHRINK]
        method.SetMetricSamplingPercentagePerLevel(shares, int(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsGradientDescentLineSearch(
        learningRate=5.0, numberOfIterations=int(iterations), convergenceMinimumValue=1e-4,
        convergenceWindowSize=5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(_SHRINK))
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()  # sigmas in pixels
    method.SetInitialTransformAsBSpline(transform, inPlace=True,
                                        scaleFactors=_REFINE_STEPS[refine])
    transform = method.Execute(fixed_image, moving_image)

    field = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, fixed_image.GetSize(), fixed_image.GetOrigin(),
        fixed_image.GetSpacing(), fixed_image.GetDirection())
    vectors = sitk.GetArrayFromImage(field)  # (H, W, 2): mm along ITK (x, y)
    disp = np.stack([vectors[..., 1] / row_mm, vectors[..., 0] / col_mm]).astype(np.float32)
    warped = sitk.Resample(moving_image, fixed_image, transform, sitk.sitkLinear, 0.0,
                           sitk.sitkFloat32, useNearestNeighborExtrapolator=True)
    seconds = time.perf_counter() - start
    return sitk.GetArrayFromImage(warped).astype(np.float32, copy=False), disp, seconds
