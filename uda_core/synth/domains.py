"""Simulated scanners ("domains") and the subjects seen through them.

A subject is the MNI template under a random smooth deformation that depends only on
(seed, subject_index), so every domain of one subject shows the same anatomy. Images are
simulated on a 1 mm grid (the template's voxels) from the deformed tissue maps and then
reduced to the output grid (2 mm isotropic by default) by area averaging.

Labels (classes background, CSF, GM, WM): at 1 mm the class fractions are
    background = 1 - mask, CSF = P_CSF, GM = P_GM * mask, WM = P_WM * mask
with mask = deformed T1 > 0.02 and P_CSF = clip(1 - P_GM - P_WM, 0, 1) * mask; their argmax
is exactly `template.tissue_labels`. On the output grid the label is the argmax of these
fractions after area averaging (i.e. the class occupying most of the output voxel; ties go
to the lower label).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from uda_core.io.volume import Volume
from uda_core.synth import contrast
from uda_core.synth.deform import Deformation, grid_points, random_deformation, sample_at
from uda_core.synth.head import HEAD_PADDING_MM, HEAD_TISSUES, simulate_head
from uda_core.synth.template import MAP_NAMES, MASK_THRESHOLD, default_template_dir, load_template

ANATOMY_PADDING_MM = 8.0
"""The subject's deformation grid, and the field of view of a brain without its head: the
template grid grown by this much on every side (a head: synth.head.HEAD_PADDING_MM)."""

TEXTURE_SIGMA_MM = 2.0
"""Correlation length (Gaussian sigma, mm) of the intra-tissue texture."""


@dataclass(frozen=True)
class Domain:
    """One simulated scanner/protocol.

    Attributes:
        name: short key ("t1", "protocol", ...), also the folder name in the demo data.
        description: one line for people.
        field_strength: key of contrast.TISSUE_PROPERTIES ("1.5T" or "3T").
        tr_ms, te_ms: repetition and echo time (ms); ti_ms: inversion time (ms) for an
            inversion-recovery sequence, None for spin echo.
        resolution_mm: acquisition resolution (FWHM of the point spread function, mm) along
            the world axes (x R-L, y A-P, z S-I); the larger value is the slice thickness.
        orientation: axis codes of the stored array (nibabel convention, e.g. "RAS", "PIL").
        bias_strength: std of the log bias field (0.1 ~ +-10 % intensity non-uniformity).
        centre_brightening: extra log-intensity at the centre of the head (3 T B1 effect).
        noise_fraction: Rician noise sigma as a fraction of the brightest tissue's signal.
        texture_fraction: std of the smooth intra-tissue intensity variation (fraction).
        gain: scanner units of the brightest tissue (images are not normalised).
        pd_scale: factors on the CSF, GM, WM signals (a vendor's or coil's own per-tissue
            intensity, e.g. its receive chain or a magnetisation-transfer effect); the
            non-brain tissues of a head keep their signals. (1, 1, 1): none.
        intensity_gamma: the reconstruction's intensity curve peak * (S / peak) ** gamma on
            the blurred magnitude image, peak = the brightest tissue's signal magnitude
            (contrast.intensity_curve); < 1 flattens contrasts non-linearly. 1: none.
    """

    name: str
    description: str
    field_strength: str
    tr_ms: float
    te_ms: float
    ti_ms: float | None = None
    resolution_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    orientation: str = "RAS"
    bias_strength: float = 0.05
    centre_brightening: float = 0.0
    noise_fraction: float = 0.02
    texture_fraction: float = 0.03
    gain: float = 1000.0
    pd_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # identity: the physics alone
    intensity_gamma: float = 1.0                             # identity: a linear scanner

    def __post_init__(self) -> None:
        if len(self.pd_scale) != 3 or min(self.pd_scale) <= 0:
            raise ValueError(f"pd_scale needs three positive factors, got {self.pd_scale}")
        if not self.intensity_gamma > 0:
            raise ValueError(f"intensity_gamma must be > 0, got {self.intensity_gamma}")

    def head_signals(self, rng: np.random.Generator | None = None) -> list[float]:
        """Signals of the non-brain tissues (synth.head.HEAD_TISSUES, signed for inversion
        recovery, CSF PD = 1); with `rng`, each tissue's proton density is scaled by
        U(0.8, 1.2) (a subject's own fat, muscle and marrow)."""
        props = contrast.HEAD_TISSUE_PROPERTIES[self.field_strength]
        scale = rng.uniform(0.8, 1.2, len(HEAD_TISSUES)) if rng is not None else None
        return [contrast.tissue_signal(props[t], self.tr_ms, self.te_ms, self.ti_ms)
                * (1.0 if scale is None else float(scale[k]))
                for k, t in enumerate(HEAD_TISSUES)]

    def tissue_signals(self) -> tuple[float, float, float]:
        """Signals of pure CSF, GM, WM (signed for inversion recovery, CSF PD = 1), each
        times its factor in `pd_scale`."""
        props = contrast.TISSUE_PROPERTIES[self.field_strength]
        csf, gm, wm = (
            contrast.tissue_signal(props[t], self.tr_ms, self.te_ms, self.ti_ms) * float(f)
            for t, f in zip(contrast.TISSUES, self.pd_scale, strict=True)
        )
        return csf, gm, wm

    def to_dict(self) -> dict:
        """Plain JSON-friendly description (for manifests). relative_tissue_signal: each
        pure tissue's image intensity over the brightest's (pd_scale and intensity_gamma
        included; before bias, blur and noise)."""
        csf, gm, wm = self.tissue_signals()
        scale = max(abs(csf), abs(gm), abs(wm))

        def relative(signal: float) -> float:
            ratio = abs(signal) / scale
            return round(ratio if self.intensity_gamma == 1.0 else ratio ** self.intensity_gamma,
                         4)

        return {
            "name": self.name,
            "description": self.description,
            "field_strength": self.field_strength,
            "sequence": "spin echo" if self.ti_ms is None else "inversion recovery",
            "tr_ms": self.tr_ms,
            "te_ms": self.te_ms,
            "ti_ms": self.ti_ms,
            "resolution_mm": list(self.resolution_mm),
            "orientation": self.orientation,
            "bias_strength": self.bias_strength,
            "centre_brightening": self.centre_brightening,
            "noise_fraction": self.noise_fraction,
            "texture_fraction": self.texture_fraction,
            "gain": self.gain,
            "pd_scale": list(self.pd_scale),
            "intensity_gamma": self.intensity_gamma,
            "relative_tissue_signal": {"CSF": relative(csf), "GM": relative(gm),
                                       "WM": relative(wm)},
        }


DOMAINS: dict[str, Domain] = {
    "t1": Domain(
        name="t1",
        description="source: 1.5 T spin-echo T1w, TR 500 ms, TE 12 ms, 1 mm isotropic, RAS",
        field_strength="1.5T", tr_ms=500.0, te_ms=12.0,
        resolution_mm=(1.0, 1.0, 1.0), orientation="RAS",
        bias_strength=0.05, noise_fraction=0.02, texture_fraction=0.03, gain=1000.0,
    ),
    "protocol": Domain(
        name="protocol",
        description=(
            "another T1w scanner/protocol: 3 T spin echo, TR 800 ms, TE 20 ms (weaker GM/WM "
            "contrast), 3.5 mm sagittal slices, strong bias with central brightening, more "
            "noise, stored in PIL orientation (sagittal slices along the last array axis)"
        ),
        field_strength="3T", tr_ms=800.0, te_ms=20.0,
        resolution_mm=(3.5, 1.0, 1.0), orientation="PIL",
        bias_strength=0.12, centre_brightening=0.2, noise_fraction=0.04,
        texture_fraction=0.04, gain=2500.0,
    ),
    "mprage": Domain(
        name="mprage",
        description=(
            "3 T MPRAGE-like T1w: inversion recovery TR 2300 ms, TI 900 ms, TE 3 ms (dark GM, "
            "near-black CSF), 1 mm isotropic, bias with central brightening, stored sagittal "
            "in ASL orientation"
        ),
        field_strength="3T", tr_ms=2300.0, te_ms=3.0, ti_ms=900.0,  # effective TR of the train
        resolution_mm=(1.0, 1.0, 1.0), orientation="ASL",
        bias_strength=0.15, centre_brightening=0.25, noise_fraction=0.03,
        texture_fraction=0.03, gain=300.0,
    ),
    "highfield": Domain(
        name="highfield",
        description=(
            "the source's spin-echo T1w run on another vendor's 3 T scanner: TR 600 ms, TE "
            "10 ms, its own per-tissue intensities and a gamma 0.7 intensity curve (flat "
            "GM/WM contrast), 5 mm axial slices, strong bias, stored LPS (DICOM-like)"
        ),
        field_strength="3T", tr_ms=600.0, te_ms=10.0,
        resolution_mm=(1.0, 1.0, 5.0), orientation="LPS",
        bias_strength=0.2, centre_brightening=0.15, noise_fraction=0.035,
        texture_fraction=0.04, gain=4000.0,
        pd_scale=(1.0, 1.06, 0.94), intensity_gamma=0.7,
    ),
    "t2": Domain(
        name="t2",
        description=(
            "1.5 T spin-echo T2w, TR 4000 ms, TE 100 ms, 1x1x2 mm axial; same grid and "
            "anatomy as t1 of the subject (voxel-aligned pairs)"
        ),
        field_strength="1.5T", tr_ms=4000.0, te_ms=100.0,
        resolution_mm=(1.0, 1.0, 2.0), orientation="RAS",
        bias_strength=0.06, noise_fraction=0.025, texture_fraction=0.03, gain=1500.0,
    ),
    "pd": Domain(
        name="pd",
        description=(
            "FLAIR-like (T2 FLAIR): 1.5 T inversion recovery TR 9000 ms, TI 2500 ms "
            "(CSF nulled: dark CSF, GM brighter than WM), TE 120 ms, 1x1x3 mm axial"
        ),
        field_strength="1.5T", tr_ms=9000.0, te_ms=120.0, ti_ms=2500.0,
        resolution_mm=(1.0, 1.0, 3.0), orientation="RAS",
        bias_strength=0.08, noise_fraction=0.03, texture_fraction=0.03, gain=800.0,
    ),
}
"""The built-in domains by name; "t1" is the source domain."""


# --------------------------------------------------------------------------- template cache
_TEMPLATE_CACHE: dict[str, tuple[torch.Tensor, np.ndarray]] = {}


def _template_tensor(template) -> tuple[torch.Tensor, np.ndarray]:
    """(3, X, Y, Z) float32 tensor of (t1, gm, wm) in 0..1 and its affine."""
    if template is None:
        key = str(default_template_dir().resolve())
        if key not in _TEMPLATE_CACHE:
            maps = load_template()
            _TEMPLATE_CACHE[key] = (
                torch.from_numpy(np.stack([maps[n].data for n in MAP_NAMES])),
                maps["t1"].affine,
            )
        return _TEMPLATE_CACHE[key]
    if not isinstance(template, dict):
        template = load_template(template)
    data = np.stack([np.asarray(template[n].data, dtype=np.float32) for n in MAP_NAMES])
    return torch.from_numpy(data), np.asarray(template["t1"].affine, dtype=np.float64)


def _rng(seed: int, subject_index: int, stream: str) -> np.random.Generator:
    """Independent reproducible random stream per (seed, subject, purpose)."""
    return np.random.default_rng([int(seed), int(subject_index), zlib.crc32(stream.encode())])


def _anatomy_grid(t_affine: np.ndarray, t_shape) -> tuple[np.ndarray, tuple[int, ...]]:
    voxel = np.linalg.norm(t_affine[:3, :3], axis=0)
    pad = np.round(ANATOMY_PADDING_MM / voxel).astype(int)
    affine = t_affine.copy()
    affine[:3, 3] = t_affine[:3, :3] @ (-pad) + t_affine[:3, 3]
    return affine, tuple(int(n) for n in np.asarray(t_shape) + 2 * pad)


def subject_deformation(subject_index: int, seed: int = 0, *, template=None) -> Deformation:
    """The random deformation that makes subject `subject_index` (depends only on
    (seed, subject_index) and the template). phi maps subject world mm -> template world mm.
    """
    data, t_affine = _template_tensor(template)
    anat_affine, anat_shape = _anatomy_grid(t_affine, data.shape[1:])
    return random_deformation(anat_affine, anat_shape, _rng(seed, subject_index, "anatomy"))


@dataclass
class _Grids:
    sim_affine: np.ndarray
    sim_shape: tuple[int, int, int]
    sim_voxel: float
    out_affine: np.ndarray
    out_shape: tuple[int, int, int]
    factor: int | None  # integer block factor sim -> out, or None (smooth + trilinear)


def _shape3(sizes: Iterable[float]) -> tuple[int, int, int]:
    """Three sizes as a shape of ints."""
    x, y, z = (int(n) for n in sizes)
    return x, y, z


def _grids(t_affine: np.ndarray, t_shape, spacing_mm: float,
           padding_mm: float = ANATOMY_PADDING_MM) -> _Grids:
    """Output grid (RAS, `spacing_mm` isotropic, the template box grown by `padding_mm`) and
    the fine simulation grid under it."""
    voxel = float(np.linalg.norm(t_affine[:3, :3], axis=0).mean())
    if not np.allclose(t_affine[:3, :3], np.diag(np.diag(t_affine[:3, :3]))) or np.any(
        np.diag(t_affine[:3, :3]) <= 0
    ):
        raise ValueError("the template must be stored RAS with a diagonal affine")
    centre = t_affine @ np.append((np.asarray(t_shape) - 1) / 2.0, 1.0)
    extent = np.asarray(t_shape) * voxel + 2 * padding_mm
    out_shape = _shape3(np.ceil(extent / spacing_mm - 1e-6))
    out_affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    out_affine[:3, 3] = centre[:3] - (np.asarray(out_shape) - 1) / 2.0 * spacing_mm
    ratio = spacing_mm / voxel
    factor = int(round(ratio)) if abs(ratio - round(ratio)) < 1e-6 and ratio >= 1 else None
    if factor is not None:
        sim_shape = _shape3([n * factor for n in out_shape])
    else:
        sim_shape = _shape3([np.ceil(n * spacing_mm / voxel) for n in out_shape])
    sim_affine = np.diag([voxel, voxel, voxel, 1.0])
    sim_affine[:3, 3] = centre[:3] - (np.asarray(sim_shape) - 1) / 2.0 * voxel
    return _Grids(sim_affine, sim_shape, voxel, out_affine, out_shape, factor)


def _to_output(array: np.ndarray, grids: _Grids) -> np.ndarray:
    """(C, *sim_shape) -> (C, *out_shape): area averaging (or anti-aliased trilinear)."""
    if grids.factor is not None:
        return contrast.area_downsample(array, grids.factor)
    spacing = np.linalg.norm(grids.out_affine[:3, :3], axis=0)
    sigma = np.sqrt(np.maximum(spacing ** 2 - grids.sim_voxel ** 2, 0)) / 2.3548 / grids.sim_voxel
    smoothed = np.stack([gaussian_filter(a, sigma, mode="nearest") for a in array])
    pts = grid_points(grids.out_affine, grids.out_shape)
    return sample_at(torch.from_numpy(smoothed), grids.sim_affine, pts).numpy()


def _reorient(array: np.ndarray, affine: np.ndarray, codes: str):
    """Store a RAS array in the axis order/directions `codes`; same world placement."""
    start = nio.io_orientation(affine)
    end = nio.axcodes2ornt(tuple(codes))
    transform = nio.ornt_transform(start, end)
    new = nio.apply_orientation(array, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(new), new_affine


def resolve_domain(domain) -> Domain:
    if isinstance(domain, Domain):
        return domain
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return DOMAINS[domain]


def make_subject(
    subject_index: int,
    domains=("t1", "protocol", "t2", "pd"),
    spacing_mm: float = 2.0,
    seed: int = 0,
    *,
    template=None,
    heads: bool = False,
) -> dict[str, tuple[Volume, Volume]]:
    """Simulate one subject seen by several domains.

    Args:
        subject_index: which subject (>= 0); with `seed` it fixes the anatomy.
        domains: names in DOMAINS (or Domain objects).
        spacing_mm: isotropic output voxel size (mm). Simulation runs on the template's
            voxels (1 mm); integer ratios are reduced by exact area averaging.
        seed: global seed (>= 0) of the data set.
        template: None (resources/template), a folder, or a dict {"t1","gm","wm"} of
            Volumes (0..1, RAS diagonal affine), e.g. a low-resolution copy for tests.
        heads: simulate the whole head around the brain (scalp, skull, fat, eyes, neck: see
            uda_core.synth.head) on a field of view grown by HEAD_PADDING_MM; every non-brain
            voxel is background in the labels. The brain is the same with or without.

    Returns:
        {domain name: (image, labels)}: image Volume float32 (X, Y, Z) in scanner units,
        labels Volume int16 on the same grid (0 background, 1 CSF, 2 GM, 3 WM). Domains with
        orientation "RAS" share one grid (voxel-aligned); others hold the same anatomy at
        the same world coordinates in another array layout.
    """
    chosen = [resolve_domain(d) for d in domains]
    data, t_affine = _template_tensor(template)
    padding = HEAD_PADDING_MM if heads else ANATOMY_PADDING_MM
    grids = _grids(t_affine, data.shape[1:], float(spacing_mm), padding)
    deformation = subject_deformation(subject_index, seed, template=template)

    # Deformed template maps on the simulation grid -> tissue fractions (CSF, GM, WM).
    t1w, gm, wm = deformation.warp(data, t_affine, grids.sim_affine, grids.sim_shape).numpy()
    mask = t1w > MASK_THRESHOLD
    del t1w
    gm = np.clip(gm, 0, 1) * mask
    wm = np.clip(wm, 0, 1) * mask
    csf = np.clip(1.0 - gm - wm, 0, 1) * mask
    fractions = np.stack([csf, gm, wm]).astype(np.float32)
    del csf, gm, wm

    # Labels: argmax of area-averaged class fractions (background first).
    background = (~mask).astype(np.float32)[None]
    out_fractions = _to_output(np.concatenate([background, fractions]), grids)
    labels_ras = np.argmax(out_fractions, axis=0).astype(np.int16)
    del background, out_fractions
    head = (simulate_head(mask, grids.sim_affine, _rng(seed, subject_index, "head"))
            if heads else None)
    del mask

    texture = contrast.smooth_field(grids.sim_shape, grids.sim_voxel,
                                    _rng(seed, subject_index, "texture"),
                                    sigma_mm=TEXTURE_SIGMA_MM, lattice_mm=2.0, channels=3)

    result = {}
    for domain in chosen:
        rng = _rng(seed, subject_index, "domain:" + domain.name)
        signals = domain.tissue_signals()
        image = contrast.mix_tissues(fractions, signals, texture, domain.texture_fraction)
        if head is not None:
            head_signals = domain.head_signals(_rng(seed, subject_index, "head:" + domain.name))
            contrast.mix_tissues(head, head_signals, texture, domain.texture_fraction,
                                 out=image)
        image *= contrast.bias_field(grids.sim_shape, grids.sim_voxel, rng,
                                     domain.bias_strength, domain.centre_brightening)
        image = contrast.blur_to_resolution(image, grids.sim_voxel, domain.resolution_mm)
        np.abs(image, out=image)
        peak = max(abs(s) for s in signals)
        image = contrast.intensity_curve(image, peak, domain.intensity_gamma)
        image = _to_output(image[None], grids)[0]
        image *= np.float32(domain.gain / peak)
        image = contrast.add_rician_noise(image, domain.noise_fraction * domain.gain, rng)

        labels, affine = labels_ras, grids.out_affine
        if domain.orientation != "RAS":
            image, _ = _reorient(image, grids.out_affine, domain.orientation)
            labels, affine = _reorient(labels_ras, grids.out_affine, domain.orientation)
        meta = {"domain": domain.name, "subject": int(subject_index), "seed": int(seed),
                "description": domain.description, "heads": bool(heads),
                "noise_sigma": float(domain.noise_fraction * domain.gain)}
        result[domain.name] = (
            Volume(data=image.astype(np.float32), affine=affine.copy(), meta=dict(meta)),
            Volume(data=labels.astype(np.int16, copy=True), affine=affine.copy(),
                   meta=dict(meta, kind="labels")),
        )
    return result
