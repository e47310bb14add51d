"""Pixel-aligned intensity changes of normalised images, for self-training ("selftrain").

Every function takes images (B, 1, X, Y) (2D slices) or (B, 1, X, Y, Z) (3D patches) of
z-scored intensities and returns a tensor of the same shape, dtype and device; none moves a
voxel, so a label map of the input is a label map of the output. The per-image amounts are
(B,) tensors; the random ones are drawn on the CPU from a torch.Generator (the same draws on
every device) and then moved to the images' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BLUR_RADIUS = 2  # Gaussian kernels are 2 * 2 + 1 = 5 pixels wide (enough for sigma <= 1 px)
_CONV = {2: F.conv2d, 3: F.conv3d}  # by the number of spatial axes


def _per_slice(values: Tensor, images: Tensor) -> Tensor:
    """(B,) amounts as (B, 1, 1, ...) (one 1 per non-batch axis of the images) on the images'
    device and dtype."""
    return values.to(device=images.device, dtype=images.dtype).view(-1, *[1] * (images.ndim - 1))


def _image_dims(images: Tensor) -> tuple[int, ...]:
    """The axes of one image (channel and spatial): everything but the batch axis."""
    return tuple(range(1, images.ndim))


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """n draws from U(low, high) on the CPU."""
    return low + (high - low) * torch.rand(n, generator=generator)


def scale_shift(images: Tensor, scales: Tensor, shifts: Tensor) -> Tensor:
    """images * scale + shift, one (scale, shift) per image (both (B,))."""
    return images * _per_slice(scales, images) + _per_slice(shifts, images)


def gamma(images: Tensor, gammas: Tensor) -> Tensor:
    """Gamma change of each image on its own min-max range: u = (x - min) / (max - min),
    x' = min + (max - min) * u ** gamma. Keeps each image's minimum and maximum (a constant
    image stays as it is). gammas: (B,), > 0."""
    low = images.amin(dim=_image_dims(images), keepdim=True)
    span = images.amax(dim=_image_dims(images), keepdim=True) - low
    unit = ((images - low) / span.clamp_min(1e-6)).clamp(0.0, 1.0)
    return low + span * unit ** _per_slice(gammas, images)


def contrast(images: Tensor, factors: Tensor) -> Tensor:
    """Contrast change about each image's mean: mean + factor * (x - mean). factors: (B,)."""
    mean = images.mean(dim=_image_dims(images), keepdim=True)
    return mean + _per_slice(factors, images) * (images - mean)


def gaussian_blur(images: Tensor, sigmas: Tensor) -> Tensor:
    """Separable Gaussian blur of each image (2 or 3 spatial axes) with its own sigma (B,) in
    pixels, one 1D pass per spatial axis; sigma 0 leaves the image unchanged. Kernels are 5
    pixels wide, borders replicated."""
    batch, spatial = images.shape[0], tuple(images.shape[2:])
    if len(spatial) not in _CONV:
        raise ValueError(f"gaussian_blur takes images (B, 1, X, Y) or (B, 1, X, Y, Z), "
                         f"not {tuple(images.shape)}")
    conv = _CONV[len(spatial)]
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=torch.float32)
    s = sigmas.float().clamp_min(1e-3).view(-1, 1)
    kernels = torch.exp(-0.5 * (offsets.view(1, -1) / s) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(images.device, images.dtype)
    size = 2 * BLUR_RADIUS + 1
    flat = images.reshape(1, batch, *spatial)  # one channel per image: a grouped convolution
    for axis in range(len(spatial)):
        pad = [0, 0] * len(spatial)            # F.pad lists the last axis first
        pad[2 * (len(spatial) - 1 - axis):2 * (len(spatial) - axis)] = [BLUR_RADIUS] * 2
        shape = [1] * len(spatial)
        shape[axis] = size
        flat = conv(F.pad(flat, pad, mode="replicate"), kernels.view(batch, 1, *shape),
                    groups=batch)
    return flat.reshape(images.shape)


def add_noise(images: Tensor, stds: Tensor, generator: torch.Generator) -> Tensor:
    """Additive Gaussian noise with a standard deviation (B,) per image (intensity units)."""
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    return images + noise * _per_slice(stds, images)


def random_scale_shift_amounts(n_views: int, batch: int, scale: float, shift: float,
                               generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Scales ~ U(1 - scale, 1 + scale) and shifts ~ U(-shift, shift), each (n_views, B)."""
    scales = _uniform(n_views * batch, 1.0 - scale, 1.0 + scale, generator)
    shifts = _uniform(n_views * batch, -shift, shift, generator)
    return scales.view(n_views, batch), shifts.view(n_views, batch)


def strong_view(images: Tensor, generator: torch.Generator, *, max_gamma: float = 1.5,
                contrast_range: float = 0.25, noise_std: float = 0.1, blur_prob: float = 0.25,
                max_blur_sigma: float = 1.0) -> Tensor:
    """A strongly changed copy of each image (slice or patch), in this order: gamma (log-uniform in
    [1 / max_gamma, max_gamma]), contrast (factor U(1 - contrast_range, 1 + contrast_range)),
    blur (with probability blur_prob, sigma U(0, max_blur_sigma) px) and noise (standard
    deviation U(0, noise_std)). The draws come from `generator` in a fixed order."""
    batch = images.shape[0]
    log_gamma = math.log(max(max_gamma, 1.0))
    gammas = torch.exp(_uniform(batch, -log_gamma, log_gamma, generator))
    factors = _uniform(batch, 1.0 - contrast_range, 1.0 + contrast_range, generator)
    blurred = torch.rand(batch, generator=generator) < blur_prob
    sigmas = _uniform(batch, 0.0, max_blur_sigma, generator) * blurred
    stds = _uniform(batch, 0.0, noise_std, generator)
    out = contrast(gamma(images, gammas), factors)
    if bool(blurred.any()):
        out = gaussian_blur(out, sigmas)
    return add_noise(out, stds, generator)
