"""Warping, displacement fields and displacement labels for 2D deformable registration.

This module holds THE warp (:func:`warp_image`) and THE Jacobian
(:func:`jacobian_determinant`) of the package; the numpy fronts for single slices in
:mod:`uda_core.spatial.fields` (``warp_slice``, ``jacobian_determinant_2d``) call them.

Conventions (shared with :mod:`uda_core.models.nets.regnet` and the registration pairs):

* Images are tensors (B, C, H, W); H = rows (first spatial axis), W = columns.
* A displacement field ``u`` is (B, 2, H, W) in PIXELS of the full-resolution slice, channel
  order (dy, dx) = (rows, columns).
* Backward ("pull") warping: ``warped(y, x) = moving(y + u_y(y, x), x + u_x(y, x))``. The map
  ``phi(p) = p + u(p)`` sends a pixel of the fixed image to the point of the moving image it
  shows. Images are resampled bilinearly, label maps by nearest neighbour; outside the image the
  border value is repeated.
* grid_sample convention: ``align_corners=True``; pixel index ``p`` (pixel centres, 0 .. n-1)
  maps to the normalised coordinate ``2 p / (n - 1) - 1``, so -1 and +1 are the centres of the
  first and last pixels; the last axis of a sampling grid is ordered (x, y) = (column, row).
* Control points: a regular grid with stride ``s`` pixels, ``Kh = H // s`` by ``Kw = W // s``;
  control point (i, j) sits at pixel ((i + 0.5) s - 0.5, (j + 0.5) s - 0.5), the centre of its
  s x s block. Control-point displacements are (B, 2, Kh, Kw), still in full-resolution pixels.
* Displacement labels: :class:`DisplacementGrid` (radius r px, n candidates per axis, n odd):
  candidate values ``linspace(-r, r, n)`` per axis; label = iy * n + ix with iy along rows (dy)
  and ix along columns (dx), the row-major order :func:`uda_core.losses.projected_emd` expects
  with ``grid_shape=(n, n)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DisplacementGrid",
    "compose_displacements",
    "control_point_coordinates",
    "dense_from_control",
    "dense_from_control_matrices",
    "dense_to_control",
    "displacement_to_grid",
    "expected_displacement",
    "folding_fraction",
    "gaussian_smooth",
    "gaussian_smooth_axis",
    "identity_displacement",
    "jacobian_determinant",
    "label_to_displacement",
    "pixel_coordinates",
    "quantise",
    "warp_image",
]

_WARP_MODES = ("bilinear", "nearest")


# ----------------------------------------------------------------------------- checks


def _check_field(disp: Tensor, name: str = "disp") -> None:
    if not isinstance(disp, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(disp).__name__}")
    if disp.dim() != 4 or disp.shape[1] != 2:
        raise ValueError(f"{name} must have shape (B, 2, H, W), got {tuple(disp.shape)}")
    if not disp.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {disp.dtype}")


def _check_shape(shape) -> tuple[int, int]:
    if len(shape) != 2 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be two positive ints (H, W), got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _check_stride(stride) -> int:
    if int(stride) != stride or int(stride) < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    return int(stride)


def _normalise(coord: Tensor, size: int) -> Tensor:
    """Pixel index -> grid_sample coordinate (align_corners=True); any value works for size 1."""
    return coord * (2.0 / max(size - 1, 1)) - 1.0


# ----------------------------------------------------------------------------- coordinates


def pixel_coordinates(shape, *, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Pixel indices of an (H, W) slice: tensor (2, H, W), channel 0 = row y, 1 = column x."""
    height, width = _check_shape(shape)
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_y, grid_x))


def identity_displacement(
    batch: int, shape, *, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The identity transform as a displacement field: zeros of shape (batch, 2, H, W)."""
    height, width = _check_shape(shape)
    return torch.zeros(int(batch), 2, height, width, device=device, dtype=dtype)


def displacement_to_grid(disp: Tensor) -> Tensor:
    """Sampling grid for ``F.grid_sample(..., align_corners=True)`` from a displacement field.

    Args:
        disp: (B, 2, H, W) displacements in pixels, channels (dy, dx).

    Returns:
        (B, H, W, 2) normalised coordinates of the points p + u(p), last axis ordered (x, y).
    """
    _check_field(disp)
    height, width = disp.shape[-2:]
    base = pixel_coordinates((height, width), device=disp.device, dtype=disp.dtype)
    points = base.unsqueeze(0) + disp  # (B, 2, H, W), (y, x) pixels
    grid_x = _normalise(points[:, 1], width)
    grid_y = _normalise(points[:, 0], height)
    return torch.stack((grid_x, grid_y), dim=-1)


def control_point_coordinates(
    shape, stride: int, *, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Pixel positions of the control points of an (H, W) slice: tensor (2, Kh, Kw), (y, x).

    Kh = H // stride, Kw = W // stride; point (i, j) is at ((i + 0.5) stride - 0.5,
    (j + 0.5) stride - 0.5) pixels.
    """
    height, width = _check_shape(shape)
    stride = _check_stride(stride)
    kh, kw = height // stride, width // stride
    if kh < 1 or kw < 1:
        raise ValueError(f"slice {height}x{width} is smaller than one stride ({stride} px)")
    ys = (torch.arange(kh, device=device, dtype=dtype) + 0.5) * stride - 0.5
    xs = (torch.arange(kw, device=device, dtype=dtype) + 0.5) * stride - 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_y, grid_x))


# ----------------------------------------------------------------------------- warping


def _sample(source: Tensor, points: Tensor, mode: str) -> Tensor:
    """``source`` (B, C, H, W) at pixel positions ``points`` (B, 2, H', W'), channels (y, x).

    Positions are clamped to the image (0 .. n - 1 per axis: the border value repeats
    outside, and no gradient flows there), then read by nearest neighbour (``torch.round``,
    half to even; any dtype, values unchanged) or bilinearly from the four neighbours, with
    the weights ``y - floor(y)`` and ``x - floor(x)`` computed in pixels (so integer positions
    read pixels exactly). Returns (B, C, H', W').
    """
    batch, channels, height, width = source.shape
    y = points[:, 0].clamp(0, height - 1)
    x = points[:, 1].clamp(0, width - 1)
    flat = source.reshape(batch, channels, height * width)

    def at(index):
        index = index.reshape(batch, 1, -1).expand(-1, channels, -1)
        return flat.gather(2, index).reshape(batch, channels, *y.shape[1:])

    if mode == "nearest":
        return at(torch.round(y).long() * width + torch.round(x).long())
    y0 = y.detach().floor().clamp_(max=max(height - 2, 0))
    x0 = x.detach().floor().clamp_(max=max(width - 2, 0))
    wy = (y - y0).unsqueeze(1)
    wx = (x - x0).unsqueeze(1)
    nw = y0.long() * width + x0.long()
    dy = width if height > 1 else 0
    dx = 1 if width > 1 else 0
    top = torch.lerp(at(nw), at(nw + dx), wx)
    bottom = torch.lerp(at(nw + dy), at(nw + dy + dx), wx)
    return torch.lerp(top, bottom, wy)


def warp_image(moving: Tensor, disp: Tensor, mode: str = "bilinear") -> Tensor:
    """Backward-warp ``moving`` with the displacement field ``disp``: the package's one warp.

    ``warped(y, x) = moving(y + u_y(y, x), x + u_x(y, x))``; points outside the image take the
    value of the nearest border pixel (the coordinates are clamped, as grid_sample's
    ``padding_mode="border"``). The sample points are formed and interpolated in pixels (no
    normalised coordinates), so a zero or whole-pixel field reads pixels exactly: the same
    numbers as scipy's ``map_coordinates(order=1 | 0, mode="nearest")``. Differentiable with
    respect to both inputs in bilinear mode.

    Args:
        moving: (B, C, H, W) image(s). For ``mode="nearest"`` any dtype (integer label maps are
            returned with their dtype and values unchanged); for ``"bilinear"`` a
            floating-point tensor.
        disp: (B, 2, H, W) displacements in pixels, channels (dy, dx), same B, H, W.
        mode: "bilinear" (intensities) or "nearest" (labels).

    Returns:
        (B, C, H, W) warped tensor with the dtype of ``moving``.
    """
    if mode not in _WARP_MODES:
        raise ValueError(f"mode must be one of {_WARP_MODES}, got {mode!r}")
    if not isinstance(moving, Tensor) or moving.dim() != 4:
        raise ValueError(
            f"moving must be a (B, C, H, W) tensor, got "
            f"{tuple(moving.shape) if isinstance(moving, Tensor) else type(moving).__name__}"
        )
    _check_field(disp)
    if moving.shape[0] != disp.shape[0] or moving.shape[-2:] != disp.shape[-2:]:
        raise ValueError(
            f"moving {tuple(moving.shape)} and disp {tuple(disp.shape)} must share B, H and W"
        )
    if not moving.is_floating_point() and mode != "nearest":
        raise TypeError(
            f"bilinear warping needs a floating-point image, got {moving.dtype}; "
            "use mode='nearest' for label maps"
        )
    dtype = moving.dtype if moving.is_floating_point() else disp.dtype
    base = pixel_coordinates(disp.shape[-2:], device=disp.device, dtype=dtype)
    return _sample(moving, base.unsqueeze(0) + disp.to(dtype), mode)


def compose_displacements(first: Tensor, second: Tensor) -> Tensor:
    """Displacement of the map p -> phi_second(phi_first(p)), with phi_u(p) = p + u(p).

    ``w(p) = first(p) + second(p + first(p))`` (``second`` resampled bilinearly, border values
    outside), so that ``warp_image(moving, w)`` ~ ``warp_image(warp_image(moving, second),
    first)``: warping by ``second`` and then by ``first``.

    Args:
        first, second: (B, 2, H, W) displacements in pixels (dy, dx).

    Returns:
        (B, 2, H, W) displacements in pixels.
    """
    _check_field(first, "first")
    _check_field(second, "second")
    if first.shape != second.shape:
        raise ValueError(
            f"first and second must have the same shape, got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    return first + warp_image(second, first)


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device) -> Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=32)
def _gaussian_taps(sigma: float) -> tuple[float, ...]:
    """The normalised taps of :func:`_gaussian_kernel` (float64) as Python numbers."""
    return tuple(_gaussian_kernel(sigma, torch.float64, None).tolist())


def gaussian_smooth_axis(field: Tensor, sigma_px: float, dim: int) -> Tensor:
    """A Gaussian filter (sigma in pixels) of ``field`` along axis ``dim``; edges replicated.

    One replicate pad and a weighted sum of the 2r + 1 shifted views (r = ceil(3 sigma)):
    the numbers of a depthwise convolution, several times faster on the CPU for the small
    maps here."""
    if sigma_px <= 0:
        return field
    taps = _gaussian_taps(float(sigma_px))
    radius = len(taps) // 2
    dim = dim % field.dim()
    length = field.shape[dim]
    # replicate padding accepts pads larger than the image; this keeps constant fields constant
    index = torch.arange(-radius, length + radius, device=field.device).clamp_(0, length - 1)
    padded = field.index_select(dim, index)
    out = padded.narrow(dim, 0, length) * taps[0]
    for shift in range(1, len(taps)):
        out = out.add_(padded.narrow(dim, shift, length), alpha=taps[shift])
    return out


def gaussian_smooth(field: Tensor, sigma_px: float) -> Tensor:
    """Separable Gaussian filter (sigma in pixels) of the last two axes of ``field`` (B, C, H,
    W) per channel; edges replicated (:func:`gaussian_smooth_axis` along H, then W)."""
    return gaussian_smooth_axis(gaussian_smooth_axis(field, sigma_px, -2), sigma_px, -1)


def _interpolation_matrix(n_pixels: int, stride: int, sigma_px: float) -> Tensor:
    """(n_pixels, n_pixels // stride) float64: 1D linear interpolation from control points at
    (i + 0.5) stride - 0.5 (constant beyond the outermost), then a Gaussian of ``sigma_px``
    with replicated edges -- one axis of :func:`dense_from_control`."""
    points = n_pixels // stride
    index = ((torch.arange(n_pixels, dtype=torch.float64) + 0.5) / stride - 0.5).clamp(
        0, points - 1)
    low = index.floor().long().clamp(max=max(points - 2, 0))
    weight = index - low
    matrix = torch.zeros(n_pixels, points, dtype=torch.float64)
    rows = torch.arange(n_pixels)
    matrix[rows, low] += 1 - weight
    matrix[rows, (low + 1).clamp(max=points - 1)] += weight
    if sigma_px > 0:
        kernel = _gaussian_kernel(float(sigma_px), torch.float64, None)
        radius = kernel.numel() // 2
        blur = torch.zeros(n_pixels, n_pixels, dtype=torch.float64)
        for offset in range(-radius, radius + 1):
            blur[rows, (rows + offset).clamp(0, n_pixels - 1)] += kernel[offset + radius]
        matrix = blur @ matrix
    return matrix


@functools.lru_cache(maxsize=64)
def dense_from_control_matrices(shape: tuple[int, int], stride: int, sigma_px: float,
                                dtype: torch.dtype,
                                device: torch.device) -> tuple[Tensor, Tensor]:
    """The two matrices of :func:`dense_from_control`: ``rows`` (H, Kh) and ``cols_t``
    (Kw, W), so that ``dense = rows @ disp_cp @ cols_t`` (cached per arguments; built as
    normal tensors even when first asked for under torch.inference_mode, so that training
    can use them later)."""
    with torch.inference_mode(False):
        rows = _interpolation_matrix(shape[0], stride, sigma_px).to(dtype=dtype, device=device)
        cols = _interpolation_matrix(shape[1], stride, sigma_px).to(dtype=dtype, device=device)
        return rows, cols.T.contiguous()


def dense_from_control(
    disp_cp: Tensor, shape, stride: int, smooth_sigma_px: float = 0.0
) -> Tensor:
    """Dense displacement field from control-point displacements (upsample, then smooth).

    The control-point field is interpolated bilinearly to every pixel, with control point (i, j)
    at pixel ((i + 0.5) stride - 0.5, (j + 0.5) stride - 0.5) and constant extrapolation beyond
    the outermost points, then filtered with a Gaussian of ``smooth_sigma_px`` pixels
    (separable, edges replicated, so a constant field stays constant). Differentiable.
    Both steps are linear and separable, so the field is ``A_rows @ disp_cp @ A_cols.T`` with
    two small matrices (H, Kh) and (W, Kw), built once per shape (cached).

    Args:
        disp_cp: (B, 2, Kh, Kw) displacements in full-resolution pixels (dy, dx), with
            Kh = H // stride and Kw = W // stride.
        shape: (H, W) of the full-resolution slice.
        stride: control-point spacing in pixels.
        smooth_sigma_px: Gaussian sigma in pixels; 0 = no smoothing.

    Returns:
        (B, 2, H, W) displacements in pixels.
    """
    _check_field(disp_cp, "disp_cp")
    height, width = _check_shape(shape)
    stride = _check_stride(stride)
    kh, kw = height // stride, width // stride
    if tuple(disp_cp.shape[-2:]) != (kh, kw):
        raise ValueError(
            f"disp_cp must have {kh}x{kw} control points for a {height}x{width} slice with "
            f"stride {stride}, got {tuple(disp_cp.shape[-2:])}"
        )
    if smooth_sigma_px < 0:
        raise ValueError(f"smooth_sigma_px must be >= 0, got {smooth_sigma_px}")
    rows, cols_t = dense_from_control_matrices((height, width), stride, float(smooth_sigma_px),
                                           disp_cp.dtype, disp_cp.device)
    return rows @ disp_cp @ cols_t


def dense_to_control(disp: Tensor, stride: int) -> Tensor:
    """Sample a dense field at the control points (bilinear): (B, 2, H, W) -> (B, 2, Kh, Kw).

    Used to turn a true dense displacement (pixels, (dy, dx)) into control-point targets, e.g.
    ``quantise(dense_to_control(disp, stride), grid)`` gives the supervision labels.
    """
    _check_field(disp)
    height, width = disp.shape[-2:]
    points = control_point_coordinates((height, width), stride, device=disp.device,
                                       dtype=disp.dtype)
    grid = torch.stack((_normalise(points[1], width), _normalise(points[0], height)), dim=-1)
    grid = grid.unsqueeze(0).expand(disp.shape[0], -1, -1, -1)
    return F.grid_sample(disp, grid, mode="bilinear", padding_mode="border", align_corners=True)


# ----------------------------------------------------------------------------- folding


def jacobian_determinant(disp: Tensor) -> Tensor:
    """Jacobian determinant of the map p -> p + u(p), by forward finite differences.

    With a = d u_y / dy, b = d u_y / dx, c = d u_x / dy, e = d u_x / dx (pixel units, forward
    differences from (y, x) to (y + 1, x) and (y, x + 1)):
    ``det = (1 + a)(1 + e) - b c``. This is exactly the determinant of the affine map of the
    triangle (y, x), (y + 1, x), (y, x + 1), so det <= 0 flags a folded (or collapsed) triangle.

    Why forward and not central differences (``np.gradient``): folding is a statement about
    neighbouring pixels swapping order, and forward differences compare exactly those
    neighbours, so each value is a geometric fact about one triangle of the pixel mesh. Central
    differences ``(u(y + 1) - u(y - 1)) / 2`` skip the pixel itself: a field that flips one
    pixel past its neighbour, or alternates from pixel to pixel, has small or zero central
    derivatives and its folds go unseen; at the edges they fall back to one-sided differences
    anyway. For smooth fields the two agree to first order (on the random fields of
    :func:`uda_core.spatial.fields.random_smooth_displacement_2d` their minima differ by
    < 0.01).

    Args:
        disp: (B, 2, H, W) displacements in pixels (dy, dx), H, W >= 2.

    Returns:
        (B, H - 1, W - 1) determinants (dimensionless; 1 = no local area change); value
        [b, y, x] belongs to pixel (y, x).
    """
    _check_field(disp)
    if disp.shape[-2] < 2 or disp.shape[-1] < 2:
        raise ValueError(f"jacobian_determinant needs H, W >= 2, got {tuple(disp.shape)}")
    d_dy = disp[:, :, 1:, :-1] - disp[:, :, :-1, :-1]  # (B, 2, H-1, W-1)
    d_dx = disp[:, :, :-1, 1:] - disp[:, :, :-1, :-1]
    return (1.0 + d_dy[:, 0]) * (1.0 + d_dx[:, 1]) - d_dx[:, 0] * d_dy[:, 1]


def folding_fraction(disp: Tensor) -> float:
    """Share (0..1) of the pixels of :func:`jacobian_determinant` with det <= 0, whole batch."""
    det = jacobian_determinant(disp)
    return float((det <= 0).to(torch.float64).mean().item())


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class DisplacementGrid:
    """Square grid of candidate displacements (the labels of discrete registration).

    Candidate values per axis: ``linspace(-radius_px, radius_px, n_per_axis)`` pixels; label
    ``iy * n + ix`` is the displacement (dy, dx) = (values[iy], values[ix]). ``n_per_axis`` must
    be odd (>= 3) so that zero displacement is a candidate (label ``centre_label``).
    """

    radius_px: float
    n_per_axis: int

    def __post_init__(self) -> None:
        if not (isinstance(self.radius_px, (int, float)) and math.isfinite(self.radius_px)
                and self.radius_px > 0):
            raise ValueError(f"radius_px must be a positive number, got {self.radius_px!r}")
        if int(self.n_per_axis) != self.n_per_axis or self.n_per_axis < 3 \
                or self.n_per_axis % 2 == 0:
            raise ValueError(f"n_per_axis must be an odd integer >= 3, got {self.n_per_axis!r}")
        object.__setattr__(self, "radius_px", float(self.radius_px))
        object.__setattr__(self, "n_per_axis", int(self.n_per_axis))

    @property
    def n_labels(self) -> int:
        """Number of labels L = n_per_axis ** 2."""
        return self.n_per_axis**2

    @property
    def shape(self) -> tuple[int, int]:
        """(n, n): the ``grid_shape`` for :func:`uda_core.losses.projected_emd`."""
        return (self.n_per_axis, self.n_per_axis)

    @property
    def step_px(self) -> float:
        """Spacing of the candidates in pixels: 2 radius / (n - 1)."""
        return 2.0 * self.radius_px / (self.n_per_axis - 1)

    @property
    def centre_label(self) -> int:
        """Label of the zero displacement."""
        return self.n_labels // 2

    @property
    def values(self) -> Tensor:
        """(n,) float32 candidate values per axis, pixels."""
        return torch.linspace(-self.radius_px, self.radius_px, self.n_per_axis)

    @property
    def candidates(self) -> Tensor:
        """(L, 2) float32 candidate displacements (dy, dx) in pixels, row l = label l."""
        values = self.values
        dy, dx = torch.meshgrid(values, values, indexing="ij")
        return torch.stack((dy.reshape(-1), dx.reshape(-1)), dim=1)


def quantise(disp_cp: Tensor, grid: DisplacementGrid) -> Tensor:
    """Nearest candidate label of each displacement (per axis; outside the radius: clamped).

    Args:
        disp_cp: (B, 2, *points) displacements in pixels (dy, dx), e.g. (B, 2, Kh, Kw).
        grid: the candidate grid.

    Returns:
        (B, *points) int64 labels iy * n + ix.
    """
    if not isinstance(disp_cp, Tensor) or disp_cp.dim() < 2 or disp_cp.shape[1] != 2:
        raise ValueError("disp_cp must be a (B, 2, *points) tensor")
    n = grid.n_per_axis
    index = torch.round((disp_cp.to(torch.float64) + grid.radius_px) / grid.step_px)
    index = index.clamp(0, n - 1).to(torch.int64)
    return index[:, 0] * n + index[:, 1]


def label_to_displacement(labels: Tensor, grid: DisplacementGrid) -> Tensor:
    """Candidate displacements of labels: (B, *points) int -> (B, 2, *points) float32 pixels."""
    if not isinstance(labels, Tensor) or labels.dim() < 1 or labels.is_floating_point():
        raise ValueError("labels must be an integer tensor of shape (B, *points)")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= grid.n_labels):
        raise ValueError(f"labels must lie in [0, {grid.n_labels - 1}]")
    candidates = grid.candidates.to(labels.device)
    disp = candidates[labels.long()]  # (B, *points, 2)
    return torch.movedim(disp, -1, 1)


def expected_displacement(probs: Tensor, grid: DisplacementGrid) -> Tensor:
    """Probability-weighted mean candidate: (B, L, *points) -> (B, 2, *points) pixels (dy, dx)."""
    if not isinstance(probs, Tensor) or probs.dim() < 2 or probs.shape[1] != grid.n_labels:
        raise ValueError(
            f"probs must be a (B, {grid.n_labels}, *points) tensor for this displacement grid"
        )
    candidates = grid.candidates.to(device=probs.device, dtype=probs.dtype)  # (L, 2)
    flat = probs.reshape(probs.shape[0], probs.shape[1], -1)
    disp = torch.einsum("blp,lc->bcp", flat, candidates)
    return disp.reshape((probs.shape[0], 2) + tuple(probs.shape[2:]))
