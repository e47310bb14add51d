"""Training pairs for 2D discrete registration: slices, random deformations, true displacements.

Source pairs get their supervision for free: a fixed slice is deformed by a known random
smooth field, so the displacement that brings the moving slice back is known exactly. Target
pairs are made the same way, except that the moving slice comes from another modality of the
same subject (e.g. its voxel-aligned T2 slice), so their true displacement is known too and can
be used for evaluation.

Conventions are those of :mod:`uda_core.spatial.warp`, which holds the one warp
(:func:`~uda_core.spatial.warp.warp_image`) and the one Jacobian
(:func:`~uda_core.spatial.warp.jacobian_determinant`); the numpy functions here
(:func:`warp_slice`, :func:`jacobian_determinant_2d`) are thin fronts of them for one slice:

- A slice is an (H, W) array; H = rows = first spatial axis, W = columns = second.
- A displacement field is (2, H, W) (or (N, 2, H, W)) in PIXELS of that slice, channel order
  (dy, dx) = (rows, columns).
- A field u is a pull (backward) field: warped(y, x) = moving(y + u_y, x + u_x), bilinear for
  intensities, nearest neighbour for labels; points outside the image take the value of the
  nearest edge pixel ("border").

(Model-grid slices of whole volumes, formerly ``registration_slices`` here, are
:mod:`uda_core.grid.pair_slices`.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from uda_core.spatial.warp import jacobian_determinant, warp_image

__all__ = [
    "displacement_at_control_points",
    "invert_displacement_2d",
    "jacobian_determinant_2d",
    "make_pairs",
    "random_smooth_displacement_2d",
    "warp_slice",
]


# --- numpy fronts of uda_core.spatial.warp --------------------------------------------------

def warp_slice(image: np.ndarray, disp: np.ndarray, order: int = 1) -> np.ndarray:
    """Backward-warp one slice: out(y, x) = image(y + disp[0, y, x], x + disp[1, y, x]).

    :func:`uda_core.spatial.warp.warp_image` on one numpy slice, computed in float64 (so the
    float32 results match scipy's ``map_coordinates(order=1, mode="nearest")``).

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
    out = _warp_channels(image[None, None], disp[None],
                         "bilinear" if order == 1 else "nearest")[0, 0]
    return out.astype(np.float32) if order == 1 else out.astype(image.dtype)


def _warp_channels(values: np.ndarray, disp: np.ndarray, mode: str = "bilinear"
                   ) -> np.ndarray:
    """(N, C, H, W) sampled at x + disp(x), disp (N, 2, H, W): warp_image in float64.

    Returns (N, C, H, W) float64 (label values stay exact: nearest neighbour copies them)."""
    source = torch.from_numpy(np.array(values, dtype=np.float64))
    field = torch.from_numpy(np.array(disp, dtype=np.float64))
    return warp_image(source, field, mode=mode).numpy()


def jacobian_determinant_2d(disp: np.ndarray) -> np.ndarray:
    """:func:`uda_core.spatial.warp.jacobian_determinant` of one (2, H, W) numpy field.

    Determinant of the Jacobian of x -> x + u(x) by forward differences (the reason is in
    ``jacobian_determinant``'s doc): (H - 1, W - 1) float64, value [y, x] for pixel (y, x).
    `disp` is in pixels, channels (dy, dx); the identity gives 1 everywhere and a value <= 0
    means the map folds there.
    """
    disp = np.asarray(disp)
    if disp.ndim != 3 or disp.shape[0] != 2:
        raise ValueError(f"disp must be (2, H, W), got shape {disp.shape}")
    field = torch.from_numpy(np.array(disp, dtype=np.float64))[None]
    return jacobian_determinant(field)[0].numpy()


# --- random fields -------------------------------------------------------------------------

def random_smooth_displacement_2d(shape, rng: np.random.Generator, max_px: float = 5.0,
                                  smooth_px: float = 8.0, min_jacobian: float = 0.2
                                  ) -> np.ndarray:
    """A random smooth displacement field that does not fold.

    White Gaussian noise per component (dy, dx) is smoothed by a Gaussian of standard
    deviation `smooth_px` pixels (edges reflected), then scaled so that the longest
    displacement vector is `max_px` pixels. If the map x -> x + u(x) would have a Jacobian
    determinant (:func:`jacobian_determinant_2d`) <= `min_jacobian` anywhere, the field is
    shrunk by 0.8 until it does not.

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
        disp: (2, H, W) u in pixels, channels (dy, dx); or (N, 2, H, W), one field each.
        iterations: fixed-point steps.

    Returns:
        float32 v of the shape of `disp`, pixels, channels (dy, dx).
    """
    disp = np.asarray(disp, dtype=np.float32)
    fields = disp if disp.ndim == 4 else disp[None]
    if fields.ndim != 4 or fields.shape[1] != 2:
        raise ValueError(f"disp must be (2, H, W) or (N, 2, H, W), got shape {disp.shape}")
    inverse = np.zeros_like(fields)
    for _ in range(int(iterations)):
        inverse = -_warp_channels(fields, inverse).astype(np.float32)
    return inverse if disp.ndim == 4 else inverse[0]


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
    disp = np.empty((n, 2, h, w), dtype=np.float32)
    for i in range(n):  # all fields first: the generator's draws are those of one per slice
        disp[i] = random_smooth_displacement_2d((h, w), rng, max_px, smooth_px)
    inverse = invert_displacement_2d(disp, inverse_iterations)
    moving = _warp_channels(source[:, None], inverse)[:, 0].astype(np.float32)
    moving_labels = None
    if labels is not None:
        moving_labels = _warp_channels(labels[:, None].astype(np.int64), inverse,
                                       "nearest")[:, 0].astype(np.int64)
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
