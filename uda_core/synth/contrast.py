"""MR contrast simulation: tissue signals, partial volume, texture, bias, blur, Rician noise.

Signal of a pure tissue (spin echo, or inversion recovery when TI is given):
    SE: S = PD (1 - exp(-TR/T1)) exp(-TE/T2)
    IR: S = PD (1 - 2 exp(-TI/T1) + exp(-TR/T1)) exp(-TE/T2)   (signed; magnitude taken
        after mixing and blurring, as a magnitude reconstruction would)
Relaxation times are representative literature values (ms) for adult brain, e.g. Wansapura
et al. JMRI 1999 (3 T: WM T1 ~830 ms, GM ~1330 ms), Stanisz et al. MRM 2005, Gelman et al.
Radiology 1999 (1.5 T: WM T1 ~650-780 ms, GM ~1000-1200 ms); CSF T1 ~4 s, T2 ~2 s; proton
density relative to CSF: WM 0.69, GM 0.80. They are rounded and meant to give realistic
contrasts, not to model a particular scanner.
A scanner's own intensity curve (intensity_curve: peak * (S / peak) ** gamma) may follow the
magnitude, changing relative contrasts non-linearly.
All arrays here are float32, shaped (X, Y, Z) (or (C, X, Y, Z)), on grids with voxel sizes
in mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

TISSUES = ("csf", "gm", "wm")
"""Tissue order used for fractions and signals (matches labels 1, 2, 3)."""


@dataclass(frozen=True)
class Tissue:
    """Relaxation times (ms) and relative proton density of one tissue."""

    t1_ms: float
    t2_ms: float
    pd: float


TISSUE_PROPERTIES = {
    "1.5T": {
        "csf": Tissue(t1_ms=4200.0, t2_ms=2000.0, pd=1.00),
        "gm": Tissue(t1_ms=1100.0, t2_ms=100.0, pd=0.80),
        "wm": Tissue(t1_ms=660.0, t2_ms=80.0, pd=0.69),
    },
    "3T": {
        "csf": Tissue(t1_ms=4300.0, t2_ms=1800.0, pd=1.00),
        "gm": Tissue(t1_ms=1350.0, t2_ms=90.0, pd=0.80),
        "wm": Tissue(t1_ms=850.0, t2_ms=72.0, pd=0.69),
    },
}
"""field strength -> tissue -> Tissue. T1 lengthens with field strength, T2 shortens."""


HEAD_TISSUE_PROPERTIES = {
    "1.5T": {
        "csf": TISSUE_PROPERTIES["1.5T"]["csf"],      # vitreous, the spinal canal's CSF
        "bone": Tissue(t1_ms=500.0, t2_ms=1.0, pd=0.05),    # cortical bone: no signal
        "marrow": Tissue(t1_ms=400.0, t2_ms=60.0, pd=0.85),  # fatty diploe
        "fat": Tissue(t1_ms=260.0, t2_ms=85.0, pd=0.90),
        "muscle": Tissue(t1_ms=1000.0, t2_ms=44.0, pd=0.75),  # muscle and skin
        "cord": TISSUE_PROPERTIES["1.5T"]["wm"],      # spinal cord: white matter
        "dura": Tissue(t1_ms=900.0, t2_ms=20.0, pd=0.60),   # dura and arachnoid
    },
    "3T": {
        "csf": TISSUE_PROPERTIES["3T"]["csf"],
        "bone": Tissue(t1_ms=550.0, t2_ms=1.0, pd=0.05),
        "marrow": Tissue(t1_ms=500.0, t2_ms=55.0, pd=0.85),
        "fat": Tissue(t1_ms=380.0, t2_ms=80.0, pd=0.90),
        "muscle": Tissue(t1_ms=1400.0, t2_ms=40.0, pd=0.75),
        "cord": TISSUE_PROPERTIES["3T"]["wm"],
        "dura": Tissue(t1_ms=1100.0, t2_ms=18.0, pd=0.60),
    },
}
"""field strength -> non-brain tissue -> Tissue (uda_core.synth.head.HEAD_TISSUES), rounded
literature values (e.g. Stanisz et al. MRM 2005 for muscle; Gold et al. AJR 2004 and de
Bazelaire et al. Radiology 2004 for fat and marrow at 1.5 and 3 T): fat and marrow are bright
and muscle is dark on T1w; cortical bone gives no signal in any of these sequences. The dura
(dense collagen) has no single source here: assumed values of a fibrous tissue (short T2,
moderate PD, T1 between muscle's and fat's), so it is dark on T2w and PD-weighted scans and
a thin grey line on T1w."""


def tissue_signal(tissue: Tissue, tr_ms: float, te_ms: float, ti_ms: float | None = None) -> float:
    """Signal of a pure tissue (arbitrary units, CSF PD = 1); signed for inversion recovery."""
    e1 = math.exp(-tr_ms / tissue.t1_ms)
    e2 = math.exp(-te_ms / tissue.t2_ms)
    if ti_ms is None:
        return tissue.pd * (1.0 - e1) * e2
    return tissue.pd * (1.0 - 2.0 * math.exp(-ti_ms / tissue.t1_ms) + e1) * e2


def mix_tissues(fractions: np.ndarray, signals, texture: np.ndarray | None = None,
                texture_fraction: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """Partial-volume mixture sum_k f_k S_k (1 + texture_fraction * texture_k).

    Args:
        fractions: (K, X, Y, Z) tissue fractions, e.g. (CSF, GM, WM), 0 outside the brain,
            or the head's tissues (synth.head.HEAD_TISSUES).
        signals: K tissue signals in the same order.
        texture: (T, X, Y, Z) zero-mean unit-std smooth random fields, or None; with fewer
            channels than tissues (T < K) they are reused cyclically (tissue k: k mod T).
        out: a float32 (X, Y, Z) array to add the mixture to (e.g. the brain's signal when
            the head's tissues are mixed in), or None for a new one.

    Returns:
        (X, Y, Z) float32 signal (`out` when given).
    """
    if out is None:
        out = np.zeros(fractions.shape[1:], dtype=np.float32)
    for k, s in enumerate(signals):
        term = fractions[k] * np.float32(s)
        if texture is not None and texture_fraction:
            term *= 1.0 + np.float32(texture_fraction) * texture[k % len(texture)]
        out += term
    return out


def smooth_field(shape, voxel_mm, rng: np.random.Generator, sigma_mm: float,
                 lattice_mm: float, channels: int = 1) -> np.ndarray:
    """Zero-mean, unit-std smooth random fields on a grid: (channels, X, Y, Z) float32.

    White noise on a lattice of `lattice_mm` spacing, Gaussian-smoothed (sigma_mm), rescaled
    to std 1 and upsampled trilinearly to the grid (cheap even for 1 mm grids).
    """
    voxel_mm = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
    extent = (np.asarray(shape) - 1) * voxel_mm
    n = tuple(int(v) for v in np.maximum(np.ceil(extent / lattice_mm).astype(int) + 1, 2))
    step = extent / (np.asarray(n) - 1)
    sigma = sigma_mm / np.maximum(step, 1e-6)
    lattice = np.empty((channels,) + n, dtype=np.float32)
    for c in range(channels):
        f = gaussian_filter(rng.standard_normal(n), sigma, mode="wrap")
        lattice[c] = f / max(f.std(), 1e-12)
    up = F.interpolate(torch.from_numpy(lattice)[None], size=tuple(int(s) for s in shape),
                       mode="trilinear", align_corners=True)[0]
    return up.numpy()


def bias_field(shape, voxel_mm, rng: np.random.Generator, strength: float,
               centre_brightening: float = 0.0) -> np.ndarray:
    """Multiplicative smooth intensity non-uniformity exp(b): (X, Y, Z) float32 > 0.

    b = strength * (smooth random field, sigma 40 mm, std 1) + centre_brightening *
    (Gaussian bump of sigma 55 mm at the grid centre, minus its mean): the random part models
    coil sensitivity, the bump the central brightening of 3 T (B1 / dielectric effect).
    """
    b = strength * smooth_field(shape, voxel_mm, rng, sigma_mm=40.0, lattice_mm=8.0)[0]
    if centre_brightening:
        voxel_mm = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
        axes = [((np.arange(n) - (n - 1) / 2.0) * v).astype(np.float32)
                for n, v in zip(shape, voxel_mm, strict=True)]
        g = [np.exp(-(a ** 2) / np.float32(2 * 55.0 ** 2)) for a in axes]
        bump = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
        b += np.float32(centre_brightening) * (bump - bump.mean())
    return np.exp(b).astype(np.float32)


def blur_to_resolution(image: np.ndarray, voxel_mm, resolution_mm) -> np.ndarray:
    """Blur an image simulated on voxels of `voxel_mm` to an acquisition resolution.

    The point spread function along each axis is a Gaussian of FWHM `resolution_mm` (slice
    profile / k-space truncation), minus what the simulation voxel already implies:
    sigma = sqrt(max(res^2 - voxel^2, 0)) / 2.355. Axes with resolution <= voxel are untouched.
    """
    voxel_mm = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
    res = np.broadcast_to(np.asarray(resolution_mm, dtype=np.float64), (3,))
    sigma_mm = np.sqrt(np.maximum(res ** 2 - voxel_mm ** 2, 0.0)) / 2.3548
    sigma = sigma_mm / voxel_mm
    if not np.any(sigma > 1e-3):
        return image
    return gaussian_filter(image, sigma, mode="constant", cval=0.0, truncate=3.0)


def intensity_curve(image: np.ndarray, peak: float, gamma: float) -> np.ndarray:
    """A scanner reconstruction's non-linear intensity curve: peak * (image / peak) ** gamma.

    image: (X, Y, Z) float32 magnitudes (>= 0); peak: the brightest tissue's signal, which
    the curve keeps fixed (as it keeps 0); gamma < 1 lifts dark tissue towards bright (the
    ratio of two intensities a/b becomes (a/b) ** gamma), gamma > 1 deepens the contrast.
    gamma = 1 returns `image` itself, untouched. Returns a float32 array of the same shape.
    """
    if gamma == 1.0:
        return image
    if gamma <= 0 or peak <= 0:
        raise ValueError(f"intensity_curve needs gamma > 0 and peak > 0, got {gamma}, {peak}")
    scaled = np.power(image / np.float32(peak), np.float32(gamma), dtype=np.float32)
    return (scaled * np.float32(peak)).astype(np.float32, copy=False)


def area_downsample(array: np.ndarray, factor: int) -> np.ndarray:
    """Means over non-overlapping factor^3 blocks of the last three axes (area averaging).

    Trailing voxels that do not fill a block are dropped. (..., X, Y, Z) -> (..., X//f, ...).
    """
    if factor == 1:
        return array
    lead = array.shape[:-3]
    n = [s // factor for s in array.shape[-3:]]
    a = array[..., : n[0] * factor, : n[1] * factor, : n[2] * factor]
    a = a.reshape(lead + (n[0], factor, n[1], factor, n[2], factor))
    return a.mean(axis=(-5, -3, -1), dtype=np.float64).astype(np.float32)


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of (image + n1) + i n2, n1, n2 ~ N(0, sigma^2): Rician noise, float32 >= 0."""
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag).astype(np.float32)
