"""Intensity foreground and normalisation, in numpy.

The same :func:`normalise` runs when a model is trained and whenever it is applied, driven by
the specification stored in the model bundle (``DEFAULT_NORMALISATION`` unless the bundle says
otherwise), so both see intensities on the same scale.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Do not modify in place: copy it (dict(DEFAULT_NORMALISATION)) to make a variant.
DEFAULT_NORMALISATION = {"kind": "percentile_zscore", "lower_percentile": 0.5,
                         "upper_percentile": 99.5, "foreground": "otsu"}

#: Percentile levels of the intensity reference a model bundle records and quantile matching
#: uses (Nyul & Udupa 1999 style landmarks, denser in the tails; the ends are the clip range
#: of DEFAULT_NORMALISATION, so matching covers every clipped value).
REFERENCE_PERCENTILES = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0,
                         90.0, 95.0, 98.0, 99.0, 99.5)

_OTSU_BINS = 256
_KINDS = ("percentile_zscore", "linear", "minmax", "none")
_FOREGROUNDS = ("otsu", "nonzero", "all")


def foreground_mask(array: np.ndarray, lower_percentile: float = 0.5,
                    upper_percentile: float = 99.5) -> np.ndarray:
    """Voxels brighter than the Otsu threshold, as a bool array of the same shape.

    The threshold is computed on a 256-bin histogram of the array clipped to its
    [lower_percentile, upper_percentile] range (percentiles of all voxels, numpy's linear
    interpolation), so a few very bright voxels do not squeeze the histogram. When that split
    leaves tissue in the dark class (a head whose bright scalp fat Otsu separated from the
    rest), the dark class is split once more (see _air_threshold). A constant array (or one
    whose spread is below its float precision) has no threshold: every voxel counts as
    foreground. No connected-component cleaning is done
    (the largest structure is not required).

    Args:
        array: any shape, finite real values (e.g. an MRI volume (X, Y, Z)).
    """
    values = np.asarray(array)
    lo, hi = (float(v) for v in np.percentile(values, [lower_percentile, upper_percentile]))
    if not hi > lo or _too_flat_for_bins(values.dtype, lo, hi):
        return np.ones(values.shape, dtype=bool)
    clipped = np.clip(values, lo, hi)
    counts, edges = np.histogram(clipped, bins=_OTSU_BINS, range=(lo, hi))
    threshold = _otsu_threshold(counts.astype(np.float64), edges)
    return values > _air_threshold(clipped, threshold)


def _too_flat_for_bins(dtype, lo: float, hi: float) -> bool:
    """True when [lo, hi] is too narrow for _OTSU_BINS distinct bin edges in ``dtype`` (a
    float32 Jacobian of an almost zero field: 1 +- 1e-7), which np.histogram refuses."""
    if not np.issubdtype(dtype, np.floating):
        return False
    return hi - lo <= 4 * _OTSU_BINS * float(np.finfo(dtype).eps) * max(abs(lo), abs(hi))


_AIR_CONTRAST = 5.0   # tissue is this many times brighter than the air/noise around a head


def _air_threshold(values: np.ndarray, threshold: float) -> float:
    """Keep the darkest class to air: when Otsu's split leaves tissue below it, split again.

    A whole-head scan has three modes (air, tissue, bright fat); on some heads Otsu separates
    fat from the rest, so most of the head would count as background. When the voxels below
    the threshold themselves split (Otsu again) into a dark class and a class that is at
    least _AIR_CONTRAST times brighter on average and larger than the foreground above the
    threshold (more tissue left out than kept), that lower split is the air/tissue boundary
    and is returned; otherwise `threshold` is (the usual case: air and noise, perhaps with
    some dark bone, below it).
    """
    below = values[values <= threshold]
    above = values.size - below.size
    if below.size < 2:
        return threshold
    lo, hi = float(below.min()), float(below.max())
    if not hi > lo:
        return threshold
    counts, edges = np.histogram(below, bins=_OTSU_BINS, range=(lo, hi))
    second = _otsu_threshold(counts.astype(np.float64), edges)
    dark, bright = below[below <= second], below[below > second]
    if dark.size == 0 or bright.size <= above:
        return threshold
    dark_mean = max(float(np.mean(np.abs(dark))), 1e-12 * max(abs(hi), 1.0))
    if float(np.mean(bright)) >= _AIR_CONTRAST * dark_mean:
        return second
    return threshold


def _otsu_threshold(counts: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold from a histogram: the bin edge maximising the between-class variance.

    For a split after bin t, with w0, w1 the class weights and m0, m1 the class means,
    the between-class variance is w0 * w1 * (m0 - m1)**2. Returns the upper edge of bin t.
    """
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1]
    total = w0[-1] + counts[-1]
    w1 = total - w0
    s0 = np.cumsum(counts * centres)[:-1]
    s1 = float(np.sum(counts * centres)) - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    between[~np.isfinite(between)] = -1.0
    return float(edges[int(np.argmax(between)) + 1])


def normalise(array: np.ndarray, spec: Mapping = DEFAULT_NORMALISATION) -> np.ndarray:
    """Normalised intensities, float32, same shape as `array`.

    ``spec["kind"]``:
      * "percentile_zscore": the foreground (``spec["foreground"]``: "otsu" =
        :func:`foreground_mask`, "nonzero", or "all") gives the percentiles
        ``lower_percentile`` / ``upper_percentile`` (of the foreground voxels only, so the
        amount of empty background around the head does not change them); every voxel is
        clipped to that range, then z-scored with the mean and standard deviation of the
        clipped foreground voxels. Background voxels are clipped and shifted too (they end
        up at or near the lowest foreground value, i.e. strongly negative), unless
        ``keep_zeros`` (MONAI's NormalizeIntensity(nonzero=True)): voxels that were 0 stay 0.
      * "linear": a fixed intensity window (MONAI's ScaleIntensityRange, nnU-Net's CT
        normalisation): ``(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``, clipped to
        [b_min, b_max] when ``clip``.
      * "minmax": the image's own minimum and maximum mapped to ``minv`` and ``maxv``
        (MONAI's ScaleIntensity; defaults 0 and 1).
      * "none": the values unchanged (as float32).

    (``spec["match_quantiles"]``, intensity standardisation, is applied after this by
    uda_core.models.inference, inside the brain the network finds.)

    An empty foreground falls back to all voxels; a constant foreground gives std 1.

    Raises:
        ValueError: unknown kind or foreground, or percentiles not 0 <= lower < upper <= 100.
    """
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"unknown normalisation kind {kind!r}; expected one of {_KINDS}")
    values = np.asarray(array, dtype=np.float32)
    if kind == "none":
        return values.copy()
    if kind == "linear":
        return _linear(values, spec)
    if kind == "minmax":
        lo, hi = float(values.min()), float(values.max())
        minv, maxv = float(spec.get("minv", 0.0)), float(spec.get("maxv", 1.0))
        scale = (maxv - minv) / (hi - lo) if hi > lo else 0.0
        return ((values - np.float32(lo)) * np.float32(scale) + np.float32(minv)).astype(
            np.float32)
    lower = float(spec.get("lower_percentile", 0.5))
    upper = float(spec.get("upper_percentile", 99.5))
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower_percentile < upper_percentile <= 100, got "
                         f"{lower} and {upper}")
    foreground = spec.get("foreground", "otsu")
    if foreground == "otsu":
        mask = foreground_mask(values, lower, upper)
    elif foreground == "nonzero":
        mask = values != 0
    elif foreground == "all":
        mask = np.ones(values.shape, dtype=bool)
    else:
        raise ValueError(f"unknown foreground {foreground!r}; expected one of {_FOREGROUNDS}")
    inside = values[mask] if mask.any() else values.ravel()
    lo, hi = (float(v) for v in np.percentile(inside, [lower, upper]))
    inside = np.clip(inside, lo, hi)
    mean = float(np.mean(inside, dtype=np.float64))
    std = float(np.std(inside, dtype=np.float64))
    if not std > 0:
        std = 1.0
    out = np.clip(values, lo, hi)
    out -= np.float32(mean)
    out /= np.float32(std)
    if spec.get("keep_zeros"):
        out[values == 0] = 0.0
    return out


def _linear(values: np.ndarray, spec: Mapping) -> np.ndarray:
    a_min, a_max = float(spec["a_min"]), float(spec["a_max"])
    b_min, b_max = float(spec.get("b_min", 0.0)), float(spec.get("b_max", 1.0))
    if a_max == a_min:
        raise ValueError(f"linear normalisation needs a_min != a_max, got {a_min}")
    out = (values - np.float32(a_min)) * np.float32((b_max - b_min) / (a_max - a_min))
    out += np.float32(b_min)
    if spec.get("clip", False):
        np.clip(out, min(b_min, b_max), max(b_min, b_max), out=out)
    return out.astype(np.float32, copy=False)


def region_quantiles(normalised: np.ndarray, region: np.ndarray,
                     percentiles=REFERENCE_PERCENTILES) -> np.ndarray:
    """Percentiles (numpy's linear interpolation) of `normalised` inside the bool mask
    `region` (same shape; e.g. the brain), shape (len(percentiles),) float64; all voxels when
    the mask is empty."""
    values = np.asarray(normalised)
    inside = values[region] if region.any() else values.ravel()
    return np.percentile(inside, np.asarray(percentiles, dtype=np.float64))


def match_quantiles(values: np.ndarray, own: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map intensities piecewise-linearly so that the landmarks `own` land on `reference`.

    Args:
        values: any shape (e.g. a normalised volume), float.
        own: (K,) landmark values of `values` (its foreground percentiles), non-decreasing.
        reference: (K,) the same percentiles of the source data.

    Returns:
        float32 array of `values`' shape: own[k] -> reference[k] exactly, linear in between,
        and values beyond the first/last landmark shifted with the end landmarks (slope 1), so
        nothing is squeezed onto one value. Ties among `own` (a flat histogram part) are
        broken by a tiny increasing offset so the map stays a function.
    """
    own = np.asarray(own, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if own.shape != reference.shape or own.ndim != 1 or own.size < 2:
        raise ValueError("own and reference must be matching 1D landmark lists (>= 2 values)")
    span = max(float(own[-1] - own[0]), 1e-6)
    own = np.maximum.accumulate(own) + np.arange(own.size) * span * 1e-9
    flat = np.asarray(values, dtype=np.float64)
    out = np.interp(flat, own, reference)
    low, high = flat < own[0], flat > own[-1]
    out[low] = reference[0] + (flat[low] - own[0])
    out[high] = reference[-1] + (flat[high] - own[-1])
    return out.astype(np.float32)
