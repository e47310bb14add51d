"""Augmentations of 2D training batches on the model grid, SynthSeg / SynthStrip style.

A batch is what source training feeds the network: images (B, 1, X, Y) float32, already
normalised by :func:`uda_core.io.intensity.normalise` (percentile z-score of the volume's
foreground; the background sits at the image's lowest value), and labels (B, X, Y) int64
(0 = background). Slices are axial; in the RAS model grid axis X is the subject's
left-right axis (X grows toward the right) and Y the posterior-anterior axis.

Every function is pure: it returns new tensors and draws its randomness only from the
``torch.Generator`` it is given (a CPU generator; draws are made on the CPU and moved to the
images' device), so the same generator state gives the same output on any device.

* Geometric (images and labels alike; labels by nearest neighbour, so they keep their class
  set): :func:`random_flip` (left-right), :func:`random_rotate_scale` (rotation and isotropic
  scaling about the slice centre; :func:`rotate_scale` with given angles and scales).
* Contrast (images only), on images rescaled to 0..1 (:func:`to_unit_range`):
  :func:`random_tissue_contrast` (SynthSeg style: each labelled tissue gets a random mean of
  its own, so any tissue order, T2's included, is seen in training),
  :func:`random_intensity_curve` (tissue contrast through a random piecewise-linear curve),
  :func:`random_gamma`, :func:`random_bias_field`, :func:`random_blur` (optionally along one
  in-plane axis, as from thick slices), :func:`random_noise` (magnitude noise); then
  :func:`restore_normalisation` puts each image back on the network's input scale.

:class:`Augmenter` composes them from an :class:`AugmentConfig`; :meth:`AugmentConfig.preset`
gives the three named settings of ``uda train-source --augment``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "Augmenter",
    "augment_batch",
    "augment_contrast",
    "random_bias_field",
    "random_blur",
    "random_flip",
    "random_gamma",
    "random_intensity_curve",
    "random_noise",
    "random_tissue_contrast",
    "random_rotate_scale",
    "restore_normalisation",
    "rotate_scale",
    "to_unit_range",
]

PRESETS = ("none", "geometric", "contrast")


@dataclass(frozen=True)
class AugmentConfig:
    """What :class:`Augmenter` does to a training batch. Strengths marked "up to" are drawn
    per image uniformly from 0 to the value, so every batch mixes mild and strong cases.

    Geometric (always on; 0 / (1, 1) switch them off):
      flip_probability: chance that an image (and its labels) is mirrored left-right, 0.5:
        brains are nearly symmetric, and source training always flipped.
      max_rotation_deg: rotation drawn from +-this, degrees in the axial plane, 10: head
        positions differ by a few degrees between scans.
      scale_range: isotropic magnification drawn from this range, (0.9, 1.1): head sizes
        differ by about +-10 % between adults.
      pixel_mm: (X, Y) size of a pixel in mm, so that a rotation is rigid in mm on a grid
        with non-square pixels; (1, 1) for square pixels (only the ratio matters).
    Contrast (only when ``intensity``):
      intensity: apply the contrast augmentations below (False: geometric only).
      tissue_contrast_probability: chance that an image's labelled tissues (CSF, GM, WM)
        each get a new random mean (:func:`random_tissue_contrast`), 0.5: a monotonic
        curve keeps T1's tissue order, and T2, PD or FLAIR reorder the tissues; SynthSeg
        draws every tissue's intensity at random for this reason.
      gamma_log_std: gamma = exp(N(0, this)), 0.3 (SynthSeg's default): the curvature of
        the intensity response.
      curve_points: (fewest, most) control points of the intensity curve, (5, 8): enough to
        move each tissue (background, CSF, GM, WM, fat) on its own.
      curve_nonmonotonic_probability: chance that the curve is not monotonic, so that the
        order of tissues can change (e.g. GM brighter than WM, as in T2), 0.1.
      max_bias_log_std: the log of the multiplicative bias field has a standard deviation of
        up to this, 0.2 (a field within about x0.7 .. x1.5, like a receive coil's).
      bias_grid: control points per axis of the bias field (bicubic upsampling), 4: a field
        that varies over the head, not within a gyrus.
      max_blur_sigma_px: Gaussian blur of up to this sigma in pixels, 1.5 (a resolution
        down to about 3.5 pixels FWHM).
      thick_slice_probability: chance that the blur acts along one in-plane axis only (X or
        Y at random), as a volume acquired in thick sagittal or coronal slices looks in an
        axial slice, 0.3.
      max_noise_std: additive Gaussian noise of up to this fraction of the image range,
        0.1, taken in magnitude (absolute value), as MR magnitude images are.
    """

    flip_probability: float = 0.5
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    pixel_mm: tuple[float, float] = (1.0, 1.0)
    intensity: bool = False
    tissue_contrast_probability: float = 0.5
    gamma_log_std: float = 0.3
    curve_points: tuple[int, int] = (5, 8)
    curve_nonmonotonic_probability: float = 0.1
    max_bias_log_std: float = 0.2
    bias_grid: int = 4
    max_blur_sigma_px: float = 1.5
    thick_slice_probability: float = 0.3
    max_noise_std: float = 0.1

    @classmethod
    def preset(cls, name: str, **changes) -> AugmentConfig:
        """A named setting, with `changes` to any field:

        * "none": left-right flips only (what source training always did);
        * "geometric": flips, rotations and scalings (the defaults above);
        * "contrast": geometric and every contrast augmentation (``intensity=True``).

        Raises:
            ValueError: an unknown name.
        """
        if name == "none":
            base = cls(max_rotation_deg=0.0, scale_range=(1.0, 1.0))
        elif name == "geometric":
            base = cls()
        elif name == "contrast":
            base = cls(intensity=True)
        else:
            raise ValueError(f"unknown augmentation {name!r}; expected one of {PRESETS}")
        return replace(base, **changes)


# ------------------------------------------------------------------------------- helpers


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """n values uniform in [low, high), float32 on the CPU."""
    return low + (high - low) * torch.rand(n, generator=generator)


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) values as (B, 1, 1, 1) on the device and dtype of `like`."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def _check_batch(images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, X, Y), got {tuple(images.shape)}")
    if labels is not None and (labels.shape[0], 1, *labels.shape[1:]) != images.shape:
        raise ValueError(f"labels must be (B, X, Y) = {(images.shape[0], *images.shape[2:])}, "
                         f"got {tuple(labels.shape)}")


# ------------------------------------------------------------------------------- geometric


def random_flip(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                probability: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image and its labels mirrored left-right (along X, axis -2 of images (B, 1, X, Y)
    and labels (B, X, Y)) with chance `probability`; one draw per image."""
    _check_batch(images, labels)
    flip = (torch.rand(images.shape[0], generator=generator) < probability).to(images.device)
    view = flip.view(-1, 1, 1, 1)
    return (torch.where(view, images.flip(-2), images),
            torch.where(view[:, 0], labels.flip(-2), labels))


def _sampling_theta(angles_deg: torch.Tensor, scales: torch.Tensor, shape: tuple[int, int],
                    pixel_mm: tuple[float, float]) -> torch.Tensor:
    """(B, 2, 3) matrices for F.affine_grid (align_corners=False) that rotate each image by
    angle degrees (from +X toward +Y) and magnify it by scale about the slice centre.

    In (X, Y) mm about the centre the content moves by T = scale * R(angle); sampling needs
    T^-1. F.affine_grid's normalised coordinates run -1..1 over the half extents
    h = (X * pixel_x / 2, Y * pixel_y / 2) and come in (Y, X) order (last axis first).
    """
    a = torch.deg2rad(angles_deg.double())
    cos, sin = torch.cos(a), torch.sin(a)
    inv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    inv = inv / scales.double().view(-1, 1, 1)                   # T^-1 in (X, Y) mm
    h = torch.tensor([shape[0] * pixel_mm[0] / 2, shape[1] * pixel_mm[1] / 2],
                     dtype=torch.float64)
    normalised = inv * h.view(1, 1, 2) / h.view(1, 2, 1)         # H^-1 T^-1 H, (X, Y) order
    yx = normalised.flip(-1).flip(-2)                            # to (Y, X) order
    return torch.cat([yx, torch.zeros(len(a), 2, 1, dtype=torch.float64)], -1).float()


def rotate_scale(images: torch.Tensor, labels: torch.Tensor, angles_deg: torch.Tensor,
                 scales: torch.Tensor, pixel_mm: tuple[float, float] = (1.0, 1.0)
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 1, X, Y) and labels (B, X, Y) rotated by `angles_deg` (B,) degrees, from
    +X toward +Y, and magnified by `scales` (B,) (> 1 enlarges) about the slice centre.

    Images are interpolated bilinearly; what comes in from outside the slice takes the value
    of the image's corner pixel [0, 0] (its background). Labels are sampled at the nearest
    pixel, so they keep their class set; outside the slice they are 0 (background). Angle 0
    and scale 1 give the input back. `pixel_mm`: the (X, Y) pixel size, so that the rotation
    is rigid in mm.
    """
    _check_batch(images, labels)
    shape = (int(images.shape[2]), int(images.shape[3]))
    theta = _sampling_theta(angles_deg.cpu(), scales.cpu(), shape, pixel_mm)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    corner = images[:, :, :1, :1]
    moved = F.grid_sample(images - corner, grid.to(images.dtype), mode="bilinear",
                          padding_mode="zeros", align_corners=False) + corner
    moved_labels = F.grid_sample(labels.unsqueeze(1).to(grid.dtype), grid, mode="nearest",
                                 padding_mode="zeros", align_corners=False)
    return moved, moved_labels[:, 0].round().to(labels.dtype)


def random_rotate_scale(images: torch.Tensor, labels: torch.Tensor,
                        generator: torch.Generator, max_rotation_deg: float = 10.0,
                        scale_range: tuple[float, float] = (0.9, 1.1),
                        pixel_mm: tuple[float, float] = (1.0, 1.0)
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rotate_scale` with an angle uniform in +-`max_rotation_deg` degrees and a scale
    uniform in `scale_range`, one of each per image (drawn in that order)."""
    n = images.shape[0]
    angles = _uniform(generator, n, -max_rotation_deg, max_rotation_deg)
    scales = _uniform(generator, n, *scale_range)
    return rotate_scale(images, labels, angles, scales, pixel_mm)


# ------------------------------------------------------------------------------- contrast


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Each image (B, 1, X, Y) linearly rescaled to 0 (its minimum, the background) .. 1 (its
    maximum); a constant image becomes 0."""
    _check_batch(images)
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    span = images.amax(dim=(1, 2, 3), keepdim=True) - lo
    return torch.where(span > 0, (images - lo) / span.clamp(min=1e-12), torch.zeros_like(images))


def random_intensity_curve(unit: torch.Tensor, generator: torch.Generator,
                           points: tuple[int, int] = (5, 8),
                           nonmonotonic_probability: float = 0.1) -> torch.Tensor:
    """Unit-range images (B, 1, X, Y) (values 0..1) mapped through a random piecewise-linear
    curve each, with n control points (n uniform in `points`, inclusive) evenly spaced on 0..1.

    The curve keeps 0 at 0 (air stays dark). Monotonic curves rise from 0 to 1 in steps of
    random size (each at least 1/6 of the mean step, so no two tissues merge); with chance
    `nonmonotonic_probability` the control values are uniform on 0..1 instead, which can
    reorder tissues. Values stay within 0..1.
    """
    _check_batch(unit)
    out = torch.empty_like(unit)
    for i in range(unit.shape[0]):
        n = int(torch.randint(points[0], points[1] + 1, (1,), generator=generator))
        if float(torch.rand(1, generator=generator)) < nonmonotonic_probability:
            values = torch.cat([torch.zeros(1), torch.rand(n - 1, generator=generator)])
        else:
            steps = 0.2 + torch.rand(n - 1, generator=generator)
            values = torch.cat([torch.zeros(1), torch.cumsum(steps, 0) / steps.sum()])
            values = values.clamp(max=1.0)   # the last one may round to just above 1
        values = values.to(device=unit.device, dtype=unit.dtype)
        t = unit[i].clamp(0, 1) * (n - 1)
        left = t.floor().clamp(max=n - 2).long()
        frac = t - left
        out[i] = values[left] + frac * (values[left + 1] - values[left])
    return out


def random_tissue_contrast(unit: torch.Tensor, labels: torch.Tensor,
                           generator: torch.Generator,
                           probability: float = 0.5) -> torch.Tensor:
    """Unit-range images (B, 1, X, Y) whose labelled tissues each get a random contrast,
    with chance `probability` per image (the others come back unchanged).

    For a chosen image and every label k > 0 (labels (B, X, Y)) present in it: its pixels
    become m_k + s * (x - mu_k), where mu_k is the class's mean now, m_k a new mean uniform
    on 0.05..1 (one per class, so tissues may swap order or merge) and s uniform on 0.5..1.5
    (one per image: the texture within a tissue scaled alike). Background pixels (label 0:
    air, scalp, skull, fat) keep their values. Values are clipped to 0..1.
    """
    _check_batch(unit, labels)
    out = unit.clone()
    n_classes = int(labels.max()) + 1 if labels.numel() else 1
    for i in range(unit.shape[0]):
        # drawn for every image, chosen or not, so that one image's draws never shift another's
        chosen = float(torch.rand(1, generator=generator)) < probability
        means = _uniform(generator, n_classes, 0.05, 1.0)
        scale = float(_uniform(generator, 1, 0.5, 1.5))
        if not chosen:
            continue
        image, label = unit[i, 0], labels[i]
        for k in range(1, n_classes):
            inside = label == k
            if not bool(inside.any()):
                continue
            mu = image[inside].mean()
            out[i, 0][inside] = float(means[k]) + scale * (image[inside] - mu)
    return out.clamp(0, 1)


def random_gamma(unit: torch.Tensor, generator: torch.Generator,
                 log_std: float = 0.3) -> torch.Tensor:
    """Unit-range images (B, 1, X, Y) raised to gamma = exp(N(0, `log_std`)), one per image;
    0 and 1 stay put, values stay within 0..1."""
    _check_batch(unit)
    gamma = torch.exp(torch.randn(unit.shape[0], generator=generator) * log_std)
    return unit.clamp(0, 1) ** _per_image(gamma, unit)


def random_bias_field(unit: torch.Tensor, generator: torch.Generator,
                      max_log_std: float = 0.2, grid: int = 4) -> torch.Tensor:
    """Images (B, 1, X, Y) times a smooth positive field exp(g) each: g is a `grid` x `grid`
    array of N(0, s) values, s uniform in 0..`max_log_std` per image, upsampled bicubically
    to the slice (corners on corners)."""
    _check_batch(unit)
    n = unit.shape[0]
    std = _uniform(generator, n, 0.0, max_log_std)
    low = torch.randn(n, 1, grid, grid, generator=generator) * std.view(-1, 1, 1, 1)
    log_field = F.interpolate(low.to(device=unit.device, dtype=unit.dtype),
                              size=tuple(unit.shape[2:]), mode="bicubic", align_corners=True)
    return unit * torch.exp(log_field)


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2 * radius + 1) normalised 1D Gaussians; sigma 0 gives the identity kernel."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = sigmas.clamp(min=1e-3).view(-1, 1)
    kernels = torch.exp(-0.5 * (t / safe) ** 2)
    kernels = torch.where(sigmas.view(-1, 1) < 1e-3, (t == 0).float().expand_as(kernels),
                          kernels)
    return kernels / kernels.sum(dim=1, keepdim=True)


def _blur_along(images: torch.Tensor, kernels: torch.Tensor, axis: int) -> torch.Tensor:
    """Each image (B, 1, X, Y) convolved with its own 1D kernel (B, K) along `axis` (2 = X,
    3 = Y), edges replicated."""
    n, k = kernels.shape
    radius = k // 2
    x = images.transpose(0, 1)                                     # (1, B, X, Y)
    if axis == 2:
        x = F.pad(x, (0, 0, radius, radius), mode="replicate")
        weight = kernels.view(n, 1, k, 1)
    else:
        x = F.pad(x, (radius, radius, 0, 0), mode="replicate")
        weight = kernels.view(n, 1, 1, k)
    out = F.conv2d(x, weight.to(device=images.device, dtype=images.dtype), groups=n)
    return out.transpose(0, 1)


def random_blur(images: torch.Tensor, generator: torch.Generator, max_sigma_px: float = 1.5,
                thick_slice_probability: float = 0.3) -> torch.Tensor:
    """Images (B, 1, X, Y) blurred by a Gaussian of sigma uniform in 0..`max_sigma_px`
    pixels each; with chance `thick_slice_probability` only along one in-plane axis (X or Y,
    even odds), as thick sagittal or coronal slices look in an axial slice. Edges are
    replicated; sigma 0 leaves the image as it is."""
    _check_batch(images)
    n = images.shape[0]
    sigma = _uniform(generator, n, 0.0, max_sigma_px)
    one_axis = torch.rand(n, generator=generator) < thick_slice_probability
    along_x = torch.rand(n, generator=generator) < 0.5
    sigma_x = torch.where(one_axis & ~along_x, torch.zeros(n), sigma)
    sigma_y = torch.where(one_axis & along_x, torch.zeros(n), sigma)
    radius = max(1, math.ceil(3 * max_sigma_px))
    out = _blur_along(images, _gaussian_kernels(sigma_x, radius), 2)
    return _blur_along(out, _gaussian_kernels(sigma_y, radius), 3)


def random_noise(images: torch.Tensor, generator: torch.Generator,
                 max_std: float = 0.1) -> torch.Tensor:
    """|image + N(0, s * range)| for images (B, 1, X, Y) of non-negative values: s uniform in
    0..`max_std` per image, range = the image's maximum (its range, the minimum being 0).
    The absolute value makes it magnitude noise: air gets a positive noise floor, as in MR."""
    _check_batch(images)
    n = images.shape[0]
    std = _uniform(generator, n, 0.0, max_std)
    noise = torch.randn(tuple(images.shape), generator=generator)
    scale = _per_image(std, images) * images.amax(dim=(1, 2, 3), keepdim=True)
    return (images + noise.to(device=images.device, dtype=images.dtype) * scale).abs()


def restore_normalisation(augmented: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Augmented images (B, 1, X, Y) put back on the network's input scale: each is shifted
    and scaled so that its foreground (the pixels of `original` above the original's minimum,
    its background value) has the mean and standard deviation the original's foreground had,
    then clipped to the original's [min, max] range.

    That is what :func:`uda_core.io.intensity.normalise` would make of an acquisition with the
    augmented contrast: a z-score over the foreground, values within the clipping range.
    Constant originals come back unchanged; a slice with fewer than 2 foreground pixels uses
    all its pixels.
    """
    _check_batch(original)
    lo = original.amin(dim=(1, 2, 3), keepdim=True)
    hi = original.amax(dim=(1, 2, 3), keepdim=True)
    weight = (original > lo + 1e-3 * (hi - lo)).to(original.dtype)
    count = weight.sum(dim=(1, 2, 3), keepdim=True)
    weight = torch.where(count >= 2, weight, torch.ones_like(weight))
    count = weight.sum(dim=(1, 2, 3), keepdim=True)

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (x * weight).sum(dim=(1, 2, 3), keepdim=True) / count
        var = (((x - mean) ** 2) * weight).sum(dim=(1, 2, 3), keepdim=True) / count
        return mean, var.sqrt()

    mean0, std0 = stats(original)
    mean1, std1 = stats(augmented)
    restored = mean0 + (augmented - mean1) * (std0 / std1.clamp(min=1e-6))
    restored = torch.minimum(torch.maximum(restored, lo), hi)
    return torch.where(hi > lo, restored, original)


def augment_contrast(images: torch.Tensor, generator: torch.Generator,
                     config: AugmentConfig, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised images (B, 1, X, Y) with a new random contrast each: rescaled to 0..1, then
    (given their `labels` (B, X, Y)) tissue contrast, intensity curve, gamma, bias field,
    blur and noise (in that order, the order of the physics: tissue contrast, coil,
    resolution, noise), then :func:`restore_normalisation`."""
    unit = to_unit_range(images)
    if labels is not None and config.tissue_contrast_probability > 0:
        unit = random_tissue_contrast(unit, labels, generator,
                                      config.tissue_contrast_probability)
    unit = random_intensity_curve(unit, generator, config.curve_points,
                                  config.curve_nonmonotonic_probability)
    unit = random_gamma(unit, generator, config.gamma_log_std)
    unit = random_bias_field(unit, generator, config.max_bias_log_std, config.bias_grid)
    unit = random_blur(unit, generator, config.max_blur_sigma_px,
                       config.thick_slice_probability)
    unit = random_noise(unit, generator, config.max_noise_std)
    return restore_normalisation(unit, images)


def augment_batch(images: torch.Tensor, labels: torch.Tensor, config: AugmentConfig,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch, images (B, 1, X, Y) float and labels (B, X, Y) int, augmented as
    `config` says: flip, rotation and scaling of both, then (``config.intensity``) a new
    contrast of the images. Same generator state, same output."""
    images, labels = random_flip(images, labels, generator, config.flip_probability)
    low, high = (float(s) for s in config.scale_range)
    if config.max_rotation_deg > 0 or (low, high) != (1.0, 1.0):
        images, labels = random_rotate_scale(images, labels, generator,
                                             config.max_rotation_deg, (low, high),
                                             config.pixel_mm)
    if config.intensity:
        images = augment_contrast(images, generator, config, labels)
    return images, labels


class Augmenter:
    """:func:`augment_batch` with `config` and its own generator, seeded with `seed`:
    ``images, labels = augmenter(images, labels)``; the n-th call after seeding gives the
    same result every time."""

    def __init__(self, config: AugmentConfig, seed: int = 0) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, images: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return augment_batch(images, labels, self.config, self.generator)
