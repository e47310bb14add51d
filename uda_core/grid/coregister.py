"""Co-register two images of one subject (e.g. its T1 onto its T2) with SimpleITK.

Used by the "ddm" method (METHODS.md section 2) when the paired source-modality image does not
already share the target's voxel grid. The recipe follows the DDM reference: a centred Euler3D
initialisation (image centres), then an affine transform optimised for Mattes mutual
information (50 bins) by gradient descent (learning rate 1.0, at most 1000 iterations,
convergence window 35, scales from physical shift), with linear interpolation. Our changes:
a random fixed-seed sample of the voxels (the reference uses all), the rate used as given
(not re-estimated), and a rigid stage before the affine one (see align_affine).

Conventions: a :class:`~uda_core.io.Volume` holds an (X, Y, Z) array and a voxel -> RAS+ mm
affine; a SimpleITK image holds (k, j, i) voxels and LPS+ geometry (origin, spacing, direction).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from uda_core.errors import InputError
from uda_core.io.readers import LPS_TO_RAS, _sitk_array, _sitk_geometry
from uda_core.io.volume import Volume

__all__ = ["align_affine", "prealign_affine", "prealign_transform", "sitk_to_volume",
           "volume_to_sitk"]


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """A float32 SimpleITK image with the voxels and world geometry of `volume`.

    The RAS affine becomes LPS (x and y negated); spacing is the length of each affine column
    and direction the normalised columns, so oblique and flipped grids are kept exactly
    (ITK cannot represent a sheared affine: InputError naming ``volume.source``).
    Inverse of :func:`sitk_to_volume`.
    """
    data = np.asarray(volume.data)
    if data.ndim != 3:
        raise ValueError(f"volume_to_sitk needs a 3D volume, got shape {data.shape}")
    lps = LPS_TO_RAS @ volume.affine  # LPS_TO_RAS is its own inverse
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise InputError("has a degenerate voxel-to-world transform (zero voxel size)",
                         volume.source)
    direction = columns / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError("has a sheared voxel-to-world transform (affine); registration "
                         "needs orthogonal voxel axes", volume.source)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0), np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    image.SetDirection([float(d) for d in direction.ravel()])
    return image


def sitk_to_volume(image: sitk.Image, **fields) -> Volume:
    """A Volume (float32 (X, Y, Z), voxel -> RAS affine) from a 3D SimpleITK image.

    Uses the readers' conversion, so images built here and files read from disk agree.
    `fields` are passed on to Volume (source, meta, ...).
    """
    if image.GetDimension() != 3:
        raise ValueError(f"sitk_to_volume needs a 3D image, got {image.GetDimension()}D")
    affine = _sitk_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection(), 3)
    return Volume(data=_sitk_array(image, True), affine=affine, **fields)


def _affine_to_ras(transform: sitk.AffineTransform) -> np.ndarray:
    """The 4x4 matrix of an ITK affine transform (LPS points -> LPS points), in RAS."""
    matrix = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=np.float64)
    shift = np.asarray(transform.GetTranslation(), dtype=np.float64)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = centre + shift - matrix @ centre
    return LPS_TO_RAS @ lps @ LPS_TO_RAS


def _registration(iterations: int, bins: int, learning_rate: float, convergence_window: int,
                  sampling: float, seed: int) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    if sampling < 1.0:
        method.SetMetricSamplingStrategy(method.RANDOM)
        # SimpleITK reads seed 0 as "seed from the wall clock": shift by one to stay fixed.
        method.SetMetricSamplingPercentage(float(sampling), int(seed) + 1)
    method.SetInterpolator(sitk.sitkLinear)
    # estimateLearningRate=Never: the given rate is used as is. SimpleITK's default (Once)
    # rescales it so the first step moves about one voxel, which then oscillates (our phantom
    # test: rate 15.6, stopped after 35 iterations 2-3 mm off).
    method.SetOptimizerAsGradientDescent(
        learningRate=float(learning_rate), numberOfIterations=int(iterations),
        convergenceMinimumValue=1e-6, convergenceWindowSize=int(convergence_window),
        estimateLearningRate=method.Never)
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def align_affine(fixed: Volume, moving: Volume, *, iterations: int = 1000, bins: int = 50,
                 learning_rate: float = 1.0, convergence_window: int = 35,
                 sampling: float = 0.1, seed: int = 0, rigid_first: bool = True) -> Volume:
    """`moving` registered (affine, Mattes mutual information) and resampled onto `fixed`.

    Steps: centre the images (Euler3D, GEOMETRY initialiser); optionally optimise that rigid
    transform; then optimise an affine transform started from it. Both stages use the same
    metric and optimiser settings.

    Args:
        fixed: the reference image (e.g. the T2 target), any 3D grid.
        moving: the image to align (e.g. the T1 of the same subject), any 3D grid; contrasts
            may differ (mutual information).
        iterations: most gradient-descent iterations per stage (reference: 1000).
        bins: Mattes mutual-information histogram bins (reference: 50).
        learning_rate: gradient-descent rate, used as given (reference: 1.0); parameters are
            scaled from physical shift (mm).
        convergence_window: iterations over which convergence is judged (reference: 35).
        sampling: fraction of fixed voxels sampled at random for the metric, 0 < f <= 1
            (1 = every voxel, as the reference; 0.1 is ten times faster on full-size scans).
        seed: sampling seed, so repeated runs give the same result.
        rigid_first: optimise the rigid (Euler3D) transform before the affine one (our
            choice: a subject moving between two scans is a rigid motion, and on our phantom
            test the rigid stage roughly halved the final error; the reference only
            centres the images before the affine stage).

    Returns:
        Volume with the shape and affine of `fixed` and the intensities of `moving` (float32,
        linear interpolation; outside `moving` filled with its minimum). ``source`` is the
        moving's; ``meta["registration"]`` holds ``fixed_to_moving_ras`` (4x4, maps fixed RAS
        mm to moving RAS mm), ``metric`` (final value), ``iterations`` (affine stage) and
        ``stop``.
    """
    if not 0.0 < sampling <= 1.0:
        raise ValueError(f"sampling must be in (0, 1], got {sampling}")
    settings = (iterations, bins, learning_rate, convergence_window, sampling, seed)
    fixed_image = volume_to_sitk(fixed)
    moving_image = volume_to_sitk(moving)

    rigid = sitk.CenteredTransformInitializer(
        fixed_image, moving_image, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.GEOMETRY)
    if rigid_first:
        method = _registration(*settings)
        method.SetInitialTransform(rigid, inPlace=True)
        method.Execute(fixed_image, moving_image)  # optimises `rigid` in place
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    method = _registration(*settings)
    method.SetInitialTransform(affine, inPlace=True)
    method.Execute(fixed_image, moving_image)  # optimises `affine` in place

    background = float(np.min(moving.data))
    aligned = sitk.Resample(moving_image, fixed_image, affine, sitk.sitkLinear, background,
                            sitk.sitkFloat32)
    meta = dict(moving.meta)
    meta["registration"] = {
        "fixed_to_moving_ras": _affine_to_ras(affine),
        "metric": float(method.GetMetricValue()),
        "iterations": int(method.GetOptimizerIteration()),
        "stop": method.GetOptimizerStopConditionDescription(),
    }
    return Volume(data=_sitk_array(aligned, True), affine=fixed.affine.copy(),
                  source=moving.source, meta=meta)


# --- pre-alignment before deformable registration (issue 13) ------------------------------

# Multi-resolution settings of prealign_affine: shrink factors and Gaussian sigmas (voxels)
# per level, Mattes MI bins, sampled voxels per level, optimiser iterations per level.
_PREALIGN_SHRINK = (4, 2)
_PREALIGN_SIGMAS = (2.0, 1.0)
_PREALIGN_BINS = 32
_PREALIGN_SAMPLES = 20000
_PREALIGN_ITERATIONS = 100


def _prealign_method(fixed_image: sitk.Image, seed: int) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=_PREALIGN_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = np.prod(fixed_image.GetSize())
    # the same NUMBER of samples at every level (capped at all voxels of the level)
    shares = [min(1.0, _PREALIGN_SAMPLES * f**3 / voxels) for f in _PREALIGN_SHRINK]
    method.SetMetricSamplingPercentagePerLevel(shares, int(seed) + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=_PREALIGN_ITERATIONS,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(_PREALIGN_SHRINK))
    method.SetSmoothingSigmasPerLevel(list(_PREALIGN_SIGMAS))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def prealign_transform(fixed_image: sitk.Image, moving_image: sitk.Image, *,
                       seed: int = 0) -> sitk.AffineTransform:
    """The recipe of :func:`prealign_affine` on SimpleITK images: the optimised
    sitk.AffineTransform (fixed physical points -> moving physical points, ITK's LPS).
    SimpleITK errors propagate (RuntimeError)."""
    rigid = sitk.CenteredTransformInitializer(
        fixed_image, moving_image, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = _prealign_method(fixed_image, seed)
    method.SetInitialTransform(rigid, inPlace=True)
    method.Execute(fixed_image, moving_image)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    method = _prealign_method(fixed_image, seed)
    method.SetInitialTransform(affine, inPlace=True)
    method.Execute(fixed_image, moving_image)
    return affine


def prealign_affine(fixed: Volume, moving: Volume, *, seed: int = 0) -> np.ndarray:
    """The affine map from ``fixed``'s world to ``moving``'s (4x4, RAS mm -> RAS mm).

    The recipe of the pre-alignment before deformable registration: a centred rigid
    (Euler3D) initialisation on the images' centres of mass (MOMENTS: robust to different
    fields of view), then a rigid and then an affine stage, each optimising Mattes mutual
    information (32 bins, 20 000 random voxels per level, fixed seed) by regular-step
    gradient descent (scales from physical shift) at two resolutions (shrink 4 and 2,
    Gaussian sigma 2 and 1 voxels). About a second on a 2 mm head, against a minute for
    :func:`align_affine`'s full-resolution recipe.

    ``moving(A @ p)`` for the world point p of a fixed voxel is the pre-aligned moving image
    (A = the result). A SimpleITK failure (e.g. the images do not overlap at all once
    centred) is an InputError naming the moving image.
    """
    try:
        affine = prealign_transform(volume_to_sitk(fixed), volume_to_sitk(moving), seed=seed)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "failed"
        raise InputError(f"affine pre-alignment onto {fixed.source or 'the fixed image'} "
                         f"failed ({reason[:160]}); do the images overlap?",
                         moving.source) from None
    return _affine_to_ras(affine)
