"""Registration pairs with ground truth: the data of registration training, adaptation and
benchmarks.

Slices (:class:`RegSlices`, numpy) are voxel-aligned model-grid slices of several subjects
(:func:`uda_core.grid.pair_slices.registration_slices`): the fixed T1 slice, the slice the
moving image is made from (the T1 itself for source pairs, the subject's other modality for
target pairs) and tissue labels. Pairs (:class:`RegPairs`, torch) deform that slice by a known
random smooth field (:func:`uda_core.spatial.fields.make_pairs`), so the displacement that
brings it back is known exactly; averaged over each control point's stride x stride block and
quantised onto the displacement grid it gives one label per control point.

Conventions of :mod:`uda_core.spatial.warp`: slices (H, W) = (X, Y) of the model grid (rows =
R, columns = A), images (B, 1, H, W), displacements in model-grid PIXELS with channels
(dy, dx), ``warp_image(moving, disp) ~ fixed``, control points every ``stride`` pixels, labels
``iy * n + ix``.

``progress(phase, done, total, scores)`` is called with phase "data" while subjects load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from uda_core.errors import InputError
from uda_core.grid.model_grid import ModelGrid
from uda_core.grid.pair_slices import registration_slices
from uda_core.io.intensity import foreground_mask
from uda_core.io.readers import read_labels, read_volume
from uda_core.spatial.fields import displacement_at_control_points, make_pairs
from uda_core.spatial.warp import DisplacementGrid, quantise

__all__ = ["RegPairs", "RegSlices", "demo_files", "load_registration_slices",
           "make_registration_pairs", "mono_modal", "pairs_from_slices", "slices_from_files"]

Progress = Callable[[str, int, int, dict], None]  # (phase, done, total, scores)


@dataclass
class RegSlices:
    """Aligned axial slices of several subjects on one model grid (numpy).

    fixed: (N, H, W) float32 normalised fixed-modality (T1) slices.
    moving_source: (N, H, W) float32 slices the moving images are made from: ``fixed`` itself
        (mono-modal) or the subject's voxel-aligned other modality (e.g. T2).
    labels: (N, H, W) int64 tissue labels of the fixed slices (0 background, 1 CSF, 2 GM, 3 WM).
    subjects: (N,) int64 subject index of each slice.
    """

    fixed: np.ndarray
    moving_source: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray

    def __len__(self) -> int:
        return int(self.fixed.shape[0])


@dataclass
class RegPairs:
    """Registration pairs with their true displacement (torch tensors, N pairs).

    fixed, moving: (N, 1, H, W) float32. disp: (N, 2, H, W) float32 pixels (dy, dx), the true
    field with ``warp_image(moving, disp) ~ fixed``. disp_cp: (N, 2, Kh, Kw) pixels, ``disp``
    averaged over each control point's stride x stride block. labels_cp: (N, Kh, Kw) int64,
    ``quantise(disp_cp, displacement_grid)``. mask_cp: (N, Kh, Kw) bool, control points whose
    block is at least half brain (fixed tissue labels > 0). fixed_labels, moving_labels:
    (N, H, W) int64 tissue labels (the moving ones warped like the moving image). subjects:
    (N,) int64.
    """

    fixed: Tensor
    moving: Tensor
    disp: Tensor
    disp_cp: Tensor
    labels_cp: Tensor
    mask_cp: Tensor
    fixed_labels: Tensor
    moving_labels: Tensor
    subjects: Tensor

    def __len__(self) -> int:
        return int(self.fixed.shape[0])

    def subset(self, index) -> RegPairs:
        """The pairs at ``index`` (slice, int array or tensor), same fields."""
        return RegPairs(**{f.name: getattr(self, f.name)[index]
                           for f in dataclasses.fields(self)})

    def to(self, device) -> RegPairs:
        return RegPairs(**{f.name: getattr(self, f.name).to(device)
                           for f in dataclasses.fields(self)})


def load_registration_slices(subjects: Sequence[int], moving_domain: str | None = None, *,
                             grid=None, data_seed: int = 0, volume_spacing_mm: float = 2.0,
                             template=None, progress: Progress | None = None) -> RegSlices:
    """Demo subjects simulated in memory and cut into model-grid slices for registration.

    Each subject is made by :func:`uda_core.synth.domains.make_subject` (seed ``data_seed``,
    ``volume_spacing_mm`` voxels; seed 0 and 2 mm are what ``uda demo-data`` writes), then
    :func:`~uda_core.grid.pair_slices.registration_slices` puts its T1 (fixed) and, with
    ``moving_domain`` (e.g. "t2", "pd"), the voxel-aligned other modality on the model grid
    ``grid`` (anything :meth:`~uda_core.grid.model_grid.ModelGrid.of` reads: a ModelGrid, a
    bundle, a config or a mapping with spacing_mm / in_plane_shape / normalisation; None: 2
    mm, 96 x 112, default normalisation). Slices with < 2 % head are
    dropped.
    """
    from uda_core.synth.domains import make_subject  # the generator is heavy; import lazily

    model_grid = ModelGrid.of(grid)
    domains = ("t1",) if moving_domain in (None, "t1") else ("t1", moving_domain)
    parts: dict[str, list] = {"fixed": [], "moving_source": [], "labels": [], "subjects": []}
    for done, subject in enumerate(subjects):
        volumes = make_subject(int(subject), domains, spacing_mm=volume_spacing_mm,
                               seed=data_seed, template=template)
        t1, labels = volumes["t1"]
        other = volumes[domains[-1]][0] if len(domains) > 1 else None
        fixed, moved, tissue = registration_slices(t1, other, model_grid, labels=labels)
        parts["fixed"].append(fixed)
        parts["moving_source"].append(fixed if moved is None else moved)
        parts["labels"].append(tissue)
        parts["subjects"].append(np.full(len(fixed), int(subject), dtype=np.int64))
        if progress is not None:
            progress("data", done + 1, len(subjects), {})
    return RegSlices(**{k: np.concatenate(v) for k, v in parts.items()})


def pairs_from_slices(slices: RegSlices, index, rng: np.random.Generator, *,
                      displacement_grid: DisplacementGrid, stride: int, max_px: float = 5.0,
                      smooth_px: float = 8.0) -> RegPairs:
    """Pairs of the slices at ``index`` with fresh random fields (see ``make_pairs``).

    ``max_px`` (longest vector, pixels) and ``smooth_px`` (Gaussian sigma, pixels) shape the
    random fields; ``rng`` is the only source of randomness.
    """
    index = np.atleast_1d(np.asarray(index))
    mono = slices.moving_source is slices.fixed
    pairs = make_pairs(slices.fixed[index], slices.labels[index], rng,
                       None if mono else slices.moving_source[index],
                       max_px=max_px, smooth_px=smooth_px)
    disp_cp = displacement_at_control_points(pairs["disp"], stride)
    brain = (pairs["fixed_labels"] > 0).to(torch.float32)[:, None]
    mask_cp = F.avg_pool2d(brain, stride, stride)[:, 0] >= 0.5
    return RegPairs(fixed=pairs["fixed"], moving=pairs["moving"], disp=pairs["disp"],
                    disp_cp=disp_cp, labels_cp=quantise(disp_cp, displacement_grid),
                    mask_cp=mask_cp, fixed_labels=pairs["fixed_labels"],
                    moving_labels=pairs["moving_labels"],
                    subjects=torch.from_numpy(slices.subjects[index].copy()))


def make_registration_pairs(subjects: Sequence[int], moving_domain: str | None = None, *,
                            seed: int = 0, grid=None,
                            displacement_grid: DisplacementGrid | None = None,
                            stride: int = 4, max_px: float = 5.0, smooth_px: float = 8.0,
                            data_seed: int = 0, template=None,
                            progress: Progress | None = None) -> RegPairs:
    """One pair per head slice of ``subjects``, reproducible from ``seed`` (for scoring).

    Mono-modal (T1-T1) without ``moving_domain``; T1 fixed / ``moving_domain`` moving
    otherwise. ``displacement_grid`` (default ``DisplacementGrid(6.0, 11)``) and ``stride``
    must be the network's (``net.grid``, ``net.stride``).
    """
    slices = load_registration_slices(subjects, moving_domain, grid=grid, data_seed=data_seed,
                                      template=template, progress=progress)
    return pairs_from_slices(slices, np.arange(len(slices)), np.random.default_rng(seed),
                             displacement_grid=displacement_grid or DisplacementGrid(6.0, 11),
                             stride=stride, max_px=max_px, smooth_px=smooth_px)


# ----------------------------------------------------------------------------- files


def demo_files(modality: str, subjects: Sequence[int] = (100, 101, 102),
               root: str | Path | None = None) -> tuple[list[Path], list[Path], list[Path]]:
    """(T1 images, `modality` images, T1 label maps) of demo subjects as ``uda demo-data``
    writes them (default root: resources/demo/brains, the skull-stripped demo set that
    demo:reg-t1 was trained on)."""
    if root is None:
        from uda_core.io.resources import resources_dir
        root = resources_dir() / "demo" / "brains"
    root = Path(root)
    ids = [f"sub-{int(s):03d}" for s in subjects]
    return ([root / "t1" / f"{i}_t1.nii.gz" for i in ids],
            [root / modality / f"{i}_{modality}.nii.gz" for i in ids],
            [root / "t1" / f"{i}_labels.nii.gz" for i in ids])


def slices_from_files(fixed: Sequence[str | Path], moving: Sequence[str | Path],
                      labels: Sequence[str | Path] | None = None, grid=None) -> RegSlices:
    """Slices of each (fixed, moving) volume pair on the model grid of `grid` (a bundle).

    The moving volume must be aligned with its fixed volume in world space (e.g. one
    session's T1 and T2): it is resampled onto the fixed volume's model grid without
    registration. Without `labels` (tissue label maps of the fixed volumes), the fixed
    slice's head mask (Otsu) stands in for them (1 = head): it marks the control points that
    count in the reference accuracy and error.
    """
    if len(moving) != len(fixed) or (labels is not None and len(labels) != len(fixed)):
        raise InputError(f"give one moving image (and label map) per fixed image; got "
                         f"{len(fixed)} fixed, {len(moving)} moving"
                         + (f", {len(labels)} label maps" if labels is not None else ""))
    parts: dict[str, list] = {"fixed": [], "moving_source": [], "labels": [], "subjects": []}
    for i, path in enumerate(fixed):
        label_map = read_labels(labels[i]) if labels is not None else None
        out = registration_slices(read_volume(path), read_volume(moving[i]), grid,
                                  labels=label_map)
        tissue = out[2] if label_map is not None else foreground_mask(out[0]).astype(np.int64)
        parts["fixed"].append(out[0])
        parts["moving_source"].append(out[1])
        parts["labels"].append(tissue.astype(np.int64))
        parts["subjects"].append(np.full(len(out[0]), i, dtype=np.int64))
    return RegSlices(**{k: np.concatenate(v) for k, v in parts.items()})


def mono_modal(slices: RegSlices) -> RegSlices:
    """The same fixed slices as T1-T1 source material (moving images made from the fixed)."""
    return RegSlices(fixed=slices.fixed, moving_source=slices.fixed, labels=slices.labels,
                     subjects=slices.subjects)
