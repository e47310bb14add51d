"""Training pairs for 2D discrete registration: slices, random deformations, true displacements.

Source pairs get their supervision for free: a fixed slice is deformed by a known random
smooth field, so the displacement that brings the moving slice back is known exactly. Target
pairs are made the same way, except that the moving slice comes from another modality of the
same subject (e.g. its voxel-aligned T2 slice), so their true displacement is known too and can
be used for evaluation.

Conventions (the registration package's, see the module docs of ``warp`` and ``regnet``):

- A slice is an (H, W) array; H = rows = first spatial axis, W = columns = second.
- A displacement field is (2, H, W) (or (N, 2, H, W)) in PIXELS of that slice, channel order
  (dy, dx) = (rows, columns).
- A field u warps a moving image backwards: warped(y, x) = moving(y + u_y, x + u_x), bilinear
  for intensities, nearest neighbour for labels; points outside the image take the value of
  the nearest edge pixel ("border").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter, map_coordinates

from uda_core.grid.prepare import labels_to_grid, prepare_volume
from uda_core.io import Volume
from uda_core.io.geometry import resample
from uda_core.io.intensity import DEFAULT_NORMALISATION, foreground_mask, normalise

__all__ = [
    "displacement_at_control_points",
    "invert_displacement_2d",
    "jacobian_determinant_2d",
    "make_pairs",
    "random_smooth_displacement_2d",
    "registration_slices",
    "warp_slice",
]

# Model grid used when registration_slices is given no grid: the demo model's
# (uda_core.runs.train_segmentation.SourceTrainingConfig defaults).
_DEFAULT_GRID = {"spacing_mm": (2.0, 2.0, 2.0), "in_plane_shape": (96, 112),
                 "normalisation": DEFAULT_NORMALISATION}


# --- warping (numpy) -----------------------------------------------------------------------
# NOTE for the lead: warp_slice duplicates, in numpy, what uda_core.spatial.warp.warp_image
# does in torch (written at the same time, so not imported here). Both sample at
# (y + u_y, x + u_x) with the edge pixels extended, which is grid_sample(padding_mode="border",
# align_corners=True); they can be merged later.

def warp_slice(image: np.ndarray, disp: np.ndarray, order: int = 1) -> np.ndarray:
    """Backward-warp one slice: out(y, x) = image(y + disp[0, y, x], x + disp[1, y, x]).

    Args:
        image: (H, W) array (intensities, or integer labels with order=0).
        disp: (2, H, W) displacement in pixels, channels (dy, dx).
        order: 1 bilinear, 0 nearest neighbour (keeps label values and dtype).

    Returns:
        (H, W) array: float32 for order 1, the input's dtype for order 0. Sample points outside
        the image take the nearest edge pixel's value.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), got {order}")
    image = np.asarray(image)
    disp = np.asarray(disp)
    if image.ndim != 2 or disp.shape != (2, *image.shape):
        raise ValueError(f"need image (H, W) and disp (2, H, W); got {image.shape} and "
                         f"{disp.shape}")
    rows, cols = np.meshgrid(np.arange(image.shape[0], dtype=np.float64),
                             np.arange(image.shape[1], dtype=np.float64), indexing="ij")
    coords = np.stack([rows + disp[0], cols + disp[1]])
    if order == 1:
        return map_coordinates(image.astype(np.float32, copy=False), coords, order=1,
                               mode="nearest").astype(np.float32, copy=False)
    return map_coordinates(image, coords, order=0, mode="nearest")


def _warp_field(field: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Each channel of a (2, H, W) field sampled (bilinear, border) at x + disp(x)."""
    return np.stack([warp_slice(field[c], disp) for c in range(field.shape[0])])


# --- random fields -------------------------------------------------------------------------

def jacobian_determinant_2d(disp: np.ndarray) -> np.ndarray:
    """det of the Jacobian of x -> x + u(x) at every pixel (central differences): (H, W).

    `disp` is (2, H, W) in pixels, channels (dy, dx); the identity gives 1 everywhere and a
    value <= 0 means the map folds there.
    """
    disp = np.asarray(disp, dtype=np.float64)
    duy_dy, duy_dx = np.gradient(disp[0])
    dux_dy, dux_dx = np.gradient(disp[1])
    return (1.0 + duy_dy) * (1.0 + dux_dx) - duy_dx * dux_dy


def random_smooth_displacement_2d(shape, rng: np.random.Generator, max_px: float = 5.0,
                                  smooth_px: float = 8.0, min_jacobian: float = 0.2
                                  ) -> np.ndarray:
    """A random smooth displacement field that does not fold.

    White Gaussian noise per component (dy, dx) is smoothed by a Gaussian of standard
    deviation `smooth_px` pixels (edges reflected), then scaled so that the longest
    displacement vector is `max_px` pixels. If the map x -> x + u(x) would have a Jacobian
    determinant <= `min_jacobian` anywhere, the field is shrunk by 0.8 until it does not.

    Args:
        shape: (H, W) of the slice.
        rng: numpy Generator, the only source of randomness.
        max_px: length of the longest displacement vector (pixels), before any shrinking.
        smooth_px: smoothing sigma (pixels); larger gives smoother, lower-frequency fields.
        min_jacobian: the determinant must stay above this everywhere (0 < it < 1).

    Returns:
        (2, H, W) float32 displacement in pixels, channels (dy, dx).
    """
    h, w = (int(n) for n in shape)
    if h < 2 or w < 2:
        raise ValueError(f"shape must be at least 2 x 2, got {tuple(shape)}")
    if max_px < 0 or smooth_px <= 0:
        raise ValueError(f"need max_px >= 0 and smooth_px > 0, got {max_px} and {smooth_px}")
    noise = rng.standard_normal((2, h, w))
    field = np.stack([gaussian_filter(noise[c], smooth_px, mode="reflect") for c in range(2)])
    longest = float(np.sqrt((field**2).sum(axis=0)).max())
    field *= max_px / max(longest, 1e-12)
    for _ in range(60):
        if jacobian_determinant_2d(field).min() > min_jacobian:
            break
        field *= 0.8
    return field.astype(np.float32)


def invert_displacement_2d(disp: np.ndarray, iterations: int = 10) -> np.ndarray:
    """The inverse of a small smooth displacement, by fixed-point iteration.

    For phi(x) = x + u(x) returns v with phi^-1(y) = y + v(y), i.e. v(y) = -u(y + v(y)),
    found by iterating v <- -u(x + v) from v = 0 (u sampled bilinearly, edges extended). It
    converges when u is smooth (|grad u| < 1); 10 iterations leave errors of a few hundredths
    of a pixel for the fields of :func:`random_smooth_displacement_2d` (see the tests).

    Args:
        disp: (2, H, W) u in pixels, channels (dy, dx).
        iterations: fixed-point steps.

    Returns:
        (2, H, W) float32 v in pixels, channels (dy, dx).
    """
    disp = np.asarray(disp, dtype=np.float32)
    inverse = np.zeros_like(disp)
    for _ in range(int(iterations)):
        inverse = -_warp_field(disp, inverse)
    return inverse


# --- pairs ---------------------------------------------------------------------------------

def make_pairs(images: np.ndarray, labels: np.ndarray | None, rng: np.random.Generator,
               moving_images: np.ndarray | None = None, *, max_px: float = 5.0,
               smooth_px: float = 8.0, inverse_iterations: int = 10) -> dict:
    """Registration pairs with known displacements, one per slice.

    For each slice a random field u (:func:`random_smooth_displacement_2d`) is drawn and the
    moving slice is the source slice warped by the inverse of x -> x + u(x) (the field v of
    :func:`invert_displacement_2d`), so that warping the moving slice with u gives back the
    fixed one: warp(moving, u)(x) = source(x + u(x) + v(x + u(x))) ~ source(x). The source is
    `images` itself (mono-modal pairs) or `moving_images` (e.g. the voxel-aligned T2 slices of
    the same subject: multi-modal pairs). Up to interpolation and the edges (sample points
    pushed outside the slice take the edge value), u is exact.

    Args:
        images: (N, H, W) fixed slices (float).
        labels: (N, H, W) integer label maps of the fixed slices, or None.
        rng: numpy Generator, the only source of randomness.
        moving_images: (N, H, W) slices to deform into the moving images, voxel-aligned with
            `images`; None uses `images`.
        max_px, smooth_px: size (pixels) and smoothness (sigma, pixels) of the random fields.
        inverse_iterations: fixed-point steps of the inversion.

    Returns:
        dict of torch tensors:
        ``fixed`` (N, 1, H, W) float32; ``moving`` (N, 1, H, W) float32 (bilinear);
        ``disp`` (N, 2, H, W) float32, pixels, (dy, dx): the true displacement with
        warp(moving, disp) ~ fixed; ``fixed_labels`` (N, H, W) int64 (= `labels`) and
        ``moving_labels`` (N, H, W) int64 (labels warped with v, nearest neighbour), both
        None when `labels` is None.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    source = images if moving_images is None else np.asarray(moving_images, dtype=np.float32)
    if source.shape != images.shape:
        raise ValueError(f"moving_images {source.shape} must have the shape of images "
                         f"{images.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != images.shape:
            raise ValueError(f"labels {labels.shape} must have the shape of images "
                             f"{images.shape}")
    n, h, w = images.shape
    moving = np.empty_like(images)
    disp = np.empty((n, 2, h, w), dtype=np.float32)
    moving_labels = None if labels is None else np.empty((n, h, w), dtype=np.int64)
    for i in range(n):
        disp[i] = random_smooth_displacement_2d((h, w), rng, max_px, smooth_px)
        inverse = invert_displacement_2d(disp[i], inverse_iterations)
        moving[i] = warp_slice(source[i], inverse, order=1)
        if labels is not None:
            moving_labels[i] = warp_slice(labels[i].astype(np.int64), inverse, order=0)
    return {
        "fixed": torch.from_numpy(images.copy())[:, None],
        "moving": torch.from_numpy(moving)[:, None],
        "disp": torch.from_numpy(disp),
        "fixed_labels": None if labels is None else torch.from_numpy(labels.astype(np.int64)),
        "moving_labels": None if moving_labels is None else torch.from_numpy(moving_labels),
    }


def displacement_at_control_points(disp: torch.Tensor, stride: int) -> torch.Tensor:
    """A dense field reduced to the control-point grid: (B, 2, H, W) -> (B, 2, Kh, Kw).

    Control point (i, j) sits at the centre ((i + 0.5) * stride - 0.5, (j + 0.5) * stride -
    0.5) of a stride x stride block of pixels; its displacement is the block's mean (exact for
    fields linear over the block; Kh = H // stride, Kw = W // stride, leftover rows/columns
    ignored). Units are unchanged (pixels). This is the target to quantise into labels.
    """
    if disp.ndim != 4 or disp.shape[1] != 2:
        raise ValueError(f"disp must be (B, 2, H, W), got {tuple(disp.shape)}")
    return F.avg_pool2d(disp, kernel_size=int(stride), stride=int(stride))


# --- slices on the model grid --------------------------------------------------------------

def _grid_value(grid, name: str):
    if grid is None:
        return _DEFAULT_GRID[name]
    if isinstance(grid, Mapping):
        return grid[name]
    return getattr(grid, name)


def registration_slices(volume_t1: Volume, volume_other: Volume | None = None, grid=None, *,
                        labels: Volume | None = None, min_fraction: float = 0.02):
    """Axial slices of a subject's images on a model grid, for registration pairs.

    The fixed modality (`volume_t1`) goes through :func:`uda_core.grid.prepare.prepare_volume`
    (model grid centred on its head, normalised). The other modality is resampled onto the
    SAME grid through world coordinates (trilinear, outside filled with its minimum; no
    registration: the two are taken to be aligned in world space, e.g. a T1/T2 pair of one
    session) and normalised with the same specification. Slices where the fixed image's
    foreground (Otsu, :func:`uda_core.io.intensity.foreground_mask` of the whole stack)
    covers less than `min_fraction` of the slice are dropped, in all outputs alike.

    Args:
        volume_t1: the fixed modality's volume.
        volume_other: the other modality of the same subject, any grid, or None.
        grid: where the model grid comes from: any object with attributes, or a mapping with
            keys, ``spacing_mm`` (x, y, z mm), ``in_plane_shape`` (X, Y voxels) and
            ``normalisation`` (e.g. a ModelBundle or SourceTrainingConfig); None: 2 mm,
            96 x 112, the default normalisation.
        labels: a label map of `volume_t1`'s subject (any grid), or None.
        min_fraction: least share of head pixels for a slice to be kept (0 keeps all).

    Returns:
        (fixed_slices, other_slices): (Z', X, Y) float32 each, other_slices None without
        `volume_other`; with `labels`, a third item (Z', X, Y) int64 (nearest neighbour).
        X is the rows (H) and Y the columns (W) of each slice.
    """
    model_input = prepare_volume(volume_t1, _grid_value(grid, "spacing_mm"),
                                 _grid_value(grid, "in_plane_shape"),
                                 _grid_value(grid, "normalisation"))
    fixed = model_input.slices
    head = foreground_mask(fixed).reshape(fixed.shape[0], -1).mean(axis=1)
    keep = np.flatnonzero(head >= min_fraction)
    other = None
    if volume_other is not None:
        on_grid = resample(volume_other.data, volume_other.affine, model_input.grid_affine,
                           model_input.grid_shape, order=1,
                           fill=float(np.min(volume_other.data)))
        other = normalise(np.moveaxis(on_grid, 2, 0), _grid_value(grid, "normalisation"))
        other = np.ascontiguousarray(other[keep], dtype=np.float32)
    fixed = np.ascontiguousarray(fixed[keep], dtype=np.float32)
    if labels is None:
        return fixed, other
    return fixed, other, np.ascontiguousarray(labels_to_grid(labels, model_input)[keep])
