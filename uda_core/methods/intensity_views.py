"""Pixel-aligned intensity changes of normalised slices, for self-training ("selftrain").

Every function takes images (B, 1, X, Y) of z-scored intensities and returns a tensor of the
same shape, dtype and device; none moves a pixel, so a label map of the input is a label map
of the output. The per-slice amounts are (B,) tensors; the random ones are drawn on the CPU
from a torch.Generator (the same draws on every device) and then moved to the images' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BLUR_RADIUS = 2  # Gaussian kernels are 2 * 2 + 1 = 5 pixels wide (enough for sigma <= 1 px)


def _per_slice(values: Tensor, images: Tensor) -> Tensor:
    """(B,) amounts as (B, 1, 1, 1) on the images' device and dtype."""
    return values.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """n draws from U(low, high) on the CPU."""
    return low + (high - low) * torch.rand(n, generator=generator)


def scale_shift(images: Tensor, scales: Tensor, shifts: Tensor) -> Tensor:
    """images * scale + shift, one (scale, shift) per slice (both (B,))."""
    return images * _per_slice(scales, images) + _per_slice(shifts, images)


def gamma(images: Tensor, gammas: Tensor) -> Tensor:
    """Gamma change of each slice on its own min-max range: u = (x - min) / (max - min),
    x' = min + (max - min) * u ** gamma. Keeps each slice's minimum and maximum (a constant
    slice stays as it is). gammas: (B,), > 0."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    span = images.amax(dim=(1, 2, 3), keepdim=True) - low
    unit = ((images - low) / span.clamp_min(1e-6)).clamp(0.0, 1.0)
    return low + span * unit ** _per_slice(gammas, images)


def contrast(images: Tensor, factors: Tensor) -> Tensor:
    """Contrast change about each slice's mean: mean + factor * (x - mean). factors: (B,)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + _per_slice(factors, images) * (images - mean)


def gaussian_blur(images: Tensor, sigmas: Tensor) -> Tensor:
    """Separable Gaussian blur of each slice with its own sigma (B,) in pixels; sigma 0 leaves
    the slice unchanged. Kernels are 5 pixels wide, borders replicated."""
    batch, _, x, y = images.shape
    offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=torch.float32)
    s = sigmas.float().clamp_min(1e-3).view(-1, 1)
    kernels = torch.exp(-0.5 * (offsets.view(1, -1) / s) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(images.device, images.dtype)
    size = 2 * BLUR_RADIUS + 1
    flat = images.reshape(1, batch, x, y)  # one channel per slice: a grouped convolution
    flat = F.pad(flat, (0, 0, BLUR_RADIUS, BLUR_RADIUS), mode="replicate")
    flat = F.conv2d(flat, kernels.view(batch, 1, size, 1), groups=batch)
    flat = F.pad(flat, (BLUR_RADIUS, BLUR_RADIUS, 0, 0), mode="replicate")
    flat = F.conv2d(flat, kernels.view(batch, 1, 1, size), groups=batch)
    return flat.reshape(batch, 1, x, y)


def add_noise(images: Tensor, stds: Tensor, generator: torch.Generator) -> Tensor:
    """Additive Gaussian noise with a standard deviation (B,) per slice (intensity units)."""
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
    """A strongly changed copy of each slice, in this order: gamma (log-uniform in
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
