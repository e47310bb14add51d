"""Registering volumes slice by slice: the work behind `uda reg apply` and the GUI.

Pipeline, for ``method="network"`` (a registration bundle) or ``"sitk"`` (the SimpleITK
B-spline + Mattes MI baseline, :func:`~uda_core.spatial.sitk_bspline.register_bspline_2d`):

0. checks: neither image empty or constant, labels on the moving image's grid (InputError
   naming the file otherwise; nothing is written);
1. pre-alignment (``prealign``, :func:`~uda_core.grid.coregister.prealign_affine`: centred
   rigid then affine, Mattes MI) gives the affine A (fixed world mm -> moving world mm).
   Rule of ``"auto"`` (the default): A is estimated for every pair and used unless the pair
   is already aligned -- A moves the fixed image's head less than 1 mm on average (e.g. two
   scans of one session) -- or A lowers the normalised mutual information of the pair on the
   model grid. Pairs of different subjects or on different grids therefore get it; ``"on"``
   always uses A, ``"off"`` never (and then the two volumes must share one voxel grid).
   After it, a moving image whose foreground covers less than 10 % of the fixed head is
   refused ("no overlap");
2. both volumes go onto the fixed image's model grid (the bundle's spacing, in-plane size
   and normalisation; the default 2 mm, 96 x 112 grid for "sitk" without a bundle),
   RAS-aligned, axial slices; the moving one through A;
3. every axial slice whose fixed image shows at least 2 % head (Otsu) is registered: a
   displacement (dy, dx) in model-grid pixels per pixel, by the network followed by
   test-time instance optimisation (``refine``,
   :mod:`uda_core.models.instance_optimisation`) or by SimpleITK; other slices keep zero;
4. do no harm: when the network's field lowers the normalised mutual information of fixed and
   warped image (head pixels of the registered slices) below the pre-aligned pair's, the
   result is flagged in ``notes`` and, with ``fallback`` (default), the deformable step is
   dropped (the pre-aligned result is returned). A model trained or adapted on other
   modalities than the images' (``moving_modality``, or read from the file name) is noted too;
5. the field is turned into world millimetres, resampled (trilinear) onto the fixed grid and
   composed with A; with ``refine_3d`` (``refine_3d_mode`` "on"; "auto": only for a pair
   that step 1 pre-aligned, i.e. scans of different subjects or grids) a 3D residual r is
   then optimised on the fixed grid and composed in (u'(p) = r(p) + u(p + r(p)),
   :mod:`uda_core.spatial.volume_refine`; it has an S component); the ORIGINAL moving image
   (and labels) are sampled once through the final field: trilinear for the image, nearest
   neighbour for the labels, edge values beyond the moving volume.

Field convention (``<stem>_field.nii.gz``): float32 (X, Y, Z, 3) on the fixed grid (same
affine), the displacement u in RAS world mm (components R, A, S) such that
``warped(p) = moving(p + u(p))`` for the world point p of every fixed voxel (a backward /
"pull" field, like ITK's fixed-to-moving transform, but in RAS rather than ITK's LPS). With
pre-alignment u is the composition: ``p + u(p) = A (p + d(p))`` with d the in-plane
deformable field (its S component 0 unless ``refine_3d``); without it u = d.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from uda_core.errors import InputError, UdaError
from uda_core.grid.model_grid import ModelGrid
from uda_core.grid.pair_slices import MIN_HEAD_FRACTION, moving_on_model_grid, pair_on_model_grid
from uda_core.io import Volume
from uda_core.io.geometry import resample
from uda_core.io.intensity import foreground_mask
from uda_core.io.modality import modality_from_path
from uda_core.io.writers import output_stem, write_volume
from uda_core.models.bundle import ModelBundle
from uda_core.models.bundle.registration import modality_mismatch, network_from_bundle
from uda_core.models.instance_optimisation import InstanceOptimisation, RefinedRegNet
from uda_core.scores.registration import normalised_mutual_information
from uda_core.spatial.jacobian_3d import jacobian_determinant_mm
from uda_core.spatial.volume_refine import VolumeRefinement, compose_residual, refine_residual
from uda_core.spatial.warp import jacobian_determinant, warp_image

__all__ = ["DEFAULT_REFINE", "METHODS", "OUTPUT_SUFFIXES", "PREALIGN_MODES", "RegistrationResult",
           "check_image_content", "check_same_grid", "compose_with_affine", "output_paths",
           "register_volumes", "resample_onto", "write_outputs"]

# The files `uda reg apply` and the GUI's Save write for a moving image <stem> (DESIGN.md).
OUTPUT_SUFFIXES = {"warped": "_warped.nii.gz", "labels": "_labels_warped.nii.gz",
                   "field": "_field.nii.gz"}

METHODS = ("network", "sitk")
PREALIGN_MODES = ("auto", "on", "off")
REFINE_3D_MODES = ("auto", "on")     # with refine_3d given: when the pair was pre-aligned / always
DEFAULT_REFINE = InstanceOptimisation()  # the default test-time optimisation (MIND)
ALIGNED_MM = 1.0    # "auto": an affine moving the fixed head less than this (mean) is dropped
MIN_OVERLAP = 0.1   # least share of the fixed head the moving foreground must cover
# MIN_HEAD_FRACTION (from uda_core.grid.pair_slices): slices with less head are not registered
_CHUNK_SLICES = 16  # fixed-grid slices sampled at a time (bounds the coordinate arrays)
# done, total: slices registered so far / to register
Progress = Callable[[int, int], None]


@dataclass
class RegistrationResult:
    """What :func:`register_volumes` returns; every volume is on the fixed image's grid.

    warped: the moving image through the field, float32 (X, Y, Z).
    labels_warped: the moving labels (nearest neighbour, their own integer dtype), or None.
    field_mm: (X, Y, Z, 3) float32 displacement in RAS mm (see the module doc).
    jacobian: (X, Y, Z) float32 determinant of the in-plane deformable map p -> p + u(p) (1 =
        no area change, <= 0 = folded), 1 outside the registered slices; with the 3D
        refinement, the 3D determinant of the whole written map (pre-alignment included:
        :func:`~uda_core.spatial.jacobian_3d.jacobian_determinant_mm`).
    folding: share (0..1) of head pixels of the registered model-grid slices with det <= 0;
        with the 3D refinement, of the fixed image's foreground voxels.
    method: "network" or "sitk"; seconds: wall time; slices: slices registered.
    prealign_ras: the pre-alignment A used (4x4, fixed RAS mm -> moving RAS mm) or None.
    similarity: normalised mutual information (1..2, higher = more similar) of the fixed
        image and the moving one on the model grid's registered head pixels: "prealigned"
        (after step 1, no deformation) and "registered" (the slice-wise field); with the 3D
        refinement also "before_3d" and "after_3d", on the fixed grid's head voxels.
    fallback: the network's deformable step was dropped because it lowered the similarity.
    notes: one-line messages for the user (pre-alignment decisions, modality mismatch,
        do-no-harm flags).
    """

    warped: Volume
    labels_warped: Volume | None
    field_mm: Volume
    jacobian: Volume
    folding: float
    method: str
    seconds: float
    slices: int
    prealign_ras: np.ndarray | None = None
    similarity: dict = field(default_factory=dict)
    fallback: bool = False
    notes: list = field(default_factory=list)


def _grid_text(volume: Volume) -> str:
    spacing = "x".join(f"{s:.3g}" for s in volume.spacing)
    return f"shape {'x'.join(map(str, volume.shape))}, spacing {spacing} mm"


def check_same_grid(reference: Volume, other: Volume, name: str = "moving",
                    reference_name: str = "the fixed image") -> None:
    """InputError naming ``other``'s file when it is not on ``reference``'s voxel grid."""
    if other.same_grid(reference):
        return
    what = "affine (position/orientation)" if other.shape == reference.shape else "grid"
    where = f" {reference.source}" if reference.source else ""
    raise InputError(f"{name} {what} differs from {reference_name}{where} "
                     f"({_grid_text(other)} vs {_grid_text(reference)}); resample it onto "
                     f"that grid first (uda reg apply --resample-moving)", other.source)


def resample_onto(volume: Volume, reference: Volume, labels: bool = False) -> Volume:
    """``volume`` resampled onto ``reference``'s grid through world coordinates.

    Trilinear for images (outside: the volume's minimum), nearest neighbour for labels
    (outside: 0, dtype kept). The result keeps ``volume``'s source (for messages).
    """
    fill = 0.0 if labels else float(np.min(volume.data))
    data = resample(volume.data, volume.affine, reference.affine, reference.shape,
                    order=0 if labels else 1, fill=fill)
    if labels:
        data = np.rint(data).astype(volume.data.dtype)
    return Volume(data=data, affine=reference.affine.copy(), source=volume.source,
                  header=reference.header, meta=dict(volume.meta))


def _register_network(network, fixed: np.ndarray, moving: np.ndarray, device, batch_size,
                      step: Callable[[int], None]) -> np.ndarray:
    """(N, H, W) slices -> (N, 2, H, W) displacements in pixels with the network."""
    out = np.zeros((fixed.shape[0], 2, *fixed.shape[1:]), np.float32)
    with torch.no_grad():
        for start in range(0, fixed.shape[0], batch_size):
            stop = min(start + batch_size, fixed.shape[0])
            f = torch.from_numpy(fixed[start:stop])[:, None].to(device)
            m = torch.from_numpy(moving[start:stop])[:, None].to(device)
            out[start:stop] = network(f, m)["disp"].float().cpu().numpy()
            step(stop - start)
    return out


def _register_sitk(fixed: np.ndarray, moving: np.ndarray, spacing,
                   step: Callable[[int], None]) -> np.ndarray:
    from uda_core.spatial.sitk_bspline import register_bspline_2d

    out = np.zeros((fixed.shape[0], 2, *fixed.shape[1:]), np.float32)
    for i in range(fixed.shape[0]):
        _, out[i], _ = register_bspline_2d(fixed[i], moving[i], spacing=spacing, threads=1)
        step(1)
    return out


def _sample_through(volume: Volume, fixed: Volume, field_mm: np.ndarray, order: int):
    """``volume`` sampled at p + u(p) for every fixed voxel p: array of fixed.shape."""
    to_index = np.linalg.inv(volume.affine)
    nx, ny, nz = fixed.shape
    source = volume.data if order == 0 else volume.data.astype(np.float32, copy=False)
    out = np.empty(fixed.shape, dtype=np.float32 if order else volume.data.dtype)
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    for z0 in range(0, nz, _CHUNK_SLICES):
        z1 = min(z0 + _CHUNK_SLICES, nz)
        kk = np.broadcast_to(np.arange(z0, z1), (nx, ny, z1 - z0))
        index = np.stack([np.broadcast_to(ii[..., None], kk.shape),
                          np.broadcast_to(jj[..., None], kk.shape), kk]).reshape(3, -1)
        world = fixed.affine[:3, :3] @ index + fixed.affine[:3, 3:]
        world += np.moveaxis(field_mm[:, :, z0:z1], -1, 0).reshape(3, -1)
        coords = to_index[:3, :3] @ world + to_index[:3, 3:]
        values = map_coordinates(source, coords, order=order, mode="nearest")
        out[:, :, z0:z1] = values.reshape(nx, ny, z1 - z0)
    return out


def check_image_content(volume: Volume, name: str = "image") -> None:
    """InputError naming ``volume``'s file when it has no finite voxels, or is constant."""
    data = np.asarray(volume.data)
    finite = data[np.isfinite(data)] if data.size else data
    if finite.size == 0:
        raise InputError(f"{name} image is empty (no finite voxels)", volume.source)
    if float(finite.max()) == float(finite.min()):
        raise InputError(f"{name} image is constant (every voxel {float(finite.min()):g}): "
                         "nothing to register", volume.source)


def _world_points(volume: Volume, z0: int, z1: int) -> np.ndarray:
    """RAS mm of the voxels of slices z0:z1 of ``volume``: (X, Y, z1 - z0, 3) float64."""
    nx, ny, _ = volume.shape
    index = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(z0, z1),
                                 indexing="ij"), axis=-1).astype(np.float64)
    return index @ volume.affine[:3, :3].T + volume.affine[:3, 3]


def compose_with_affine(field_mm: np.ndarray, fixed: Volume, affine: np.ndarray) -> np.ndarray:
    """The displacement u with ``p + u(p) = A (p + d(p))`` for every fixed voxel's point p.

    field_mm: d, (X, Y, Z, 3) RAS mm on ``fixed``'s grid; affine: A (4x4, fixed RAS mm ->
    moving RAS mm). Returns u, (X, Y, Z, 3) float32 RAS mm.
    """
    out = np.empty(field_mm.shape, np.float32)
    linear, shift = affine[:3, :3], affine[:3, 3]
    for z0 in range(0, fixed.shape[2], _CHUNK_SLICES):
        z1 = min(z0 + _CHUNK_SLICES, fixed.shape[2])
        points = _world_points(fixed, z0, z1)
        moved = (points + field_mm[:, :, z0:z1]) @ linear.T + shift
        out[:, :, z0:z1] = moved - points
    return out


def _through_affine(volume: Volume, affine: np.ndarray) -> Volume:
    """``volume`` seen through A: the same voxels with voxel -> world ``A^-1 @ affine``, so
    that reading it at world point p reads ``volume`` at A p."""
    return Volume(data=volume.data, affine=np.linalg.inv(affine) @ volume.affine,
                  source=volume.source, meta=dict(volume.meta))


def _similarity(fixed_slices: np.ndarray, moving_slices: np.ndarray, head: np.ndarray) -> float:
    return float(normalised_mutual_information(fixed_slices, moving_slices, head))


def _overlap(moving: Volume, model_input, head: np.ndarray) -> float:
    """Share of the fixed head (model grid, (Z, X, Y) bool) inside the moving foreground."""
    mask = foreground_mask(np.nan_to_num(np.asarray(moving.data, np.float64)))
    on_grid = resample(mask.astype(np.float32), moving.affine, model_input.grid_affine,
                       model_input.grid_shape, order=0, fill=0.0)
    inside = np.moveaxis(on_grid, 2, 0) > 0.5
    return float((inside & head).sum() / max(int(head.sum()), 1))


def _decide_prealign(mode: str, fixed: Volume, moving: Volume, grid, notes: list,
                     seed: int) -> np.ndarray | None:
    """The pre-alignment to use (see the module doc's rule), or None; notes say why."""
    if mode == "off":
        return None
    from uda_core.grid.coregister import prealign_affine

    affine = prealign_affine(fixed, moving, seed=seed)
    if mode == "on":
        notes.append("pre-aligned (affine, Mattes MI)")
        return affine
    pair = pair_on_model_grid(fixed, moving, grid, MIN_HEAD_FRACTION)
    head = pair.head[pair.keep]
    points = np.argwhere(pair.head)[:, [1, 2, 0]].astype(np.float64)  # (X, Y, Z) indices
    world = points @ pair.model_input.grid_affine[:3, :3].T + pair.model_input.grid_affine[:3, 3]
    shift = float(np.linalg.norm(world @ affine[:3, :3].T + affine[:3, 3] - world,
                                 axis=1).mean()) if len(world) else 0.0
    if shift < ALIGNED_MM and fixed.same_grid(moving):
        notes.append(f"already aligned (the affine pre-alignment would move the head "
                     f"{shift:.2f} mm on average): not pre-aligned")
        return None
    fixed_slices = pair.model_input.slices[pair.keep]
    assert pair.moving is not None  # a moving volume was given
    before = _similarity(fixed_slices, pair.moving[pair.keep], head)
    try:
        aligned = moving_on_model_grid(_through_affine(moving, affine), pair.model_input, grid)
    except ValueError:  # nearly constant on the grid: the affine moved the image out of view
        notes.append("the affine pre-alignment moved the moving image out of the fixed "
                     "image's view: not used")
        return None
    after = _similarity(fixed_slices, aligned[pair.keep], head)
    if after < before:
        notes.append(f"the affine pre-alignment lowered the mutual information ({before:.3f} "
                     f"-> {after:.3f}): not used")
        return None
    notes.append(f"pre-aligned (affine, Mattes MI; head moved {shift:.1f} mm on average, "
                 f"mutual information {before:.3f} -> {after:.3f})")
    return affine


def register_volumes(bundle: ModelBundle | None, fixed: Volume, moving: Volume,
                     moving_labels: Volume | None = None, *, device="cpu",
                     method: str = "network", network=None, batch_size: int = 8,
                     prealign: str = "auto",
                     refine: InstanceOptimisation | None = DEFAULT_REFINE,
                     fallback: bool = True, moving_modality: str | None = None,
                     fixed_modality: str | None = None, seed: int = 0,
                     refine_3d: VolumeRefinement | None = None,
                     refine_3d_mode: str = "on",
                     progress: Progress | None = None,
                     cancel: Callable[[], bool] | None = None) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` slice by slice (see the module doc).

    Args:
        bundle: a registration bundle (method "network"); for "sitk" optional, it only gives
            the model grid.
        fixed, moving: volumes, any grids with ``prealign`` "auto"/"on"; one voxel grid with
            "off" (InputError naming ``moving`` otherwise).
        moving_labels: integer labels on ``moving``'s grid, warped by nearest neighbour.
        device: where the network runs. network: an already built network of ``bundle``
            (e.g. adapted weights in the GUI); built from the bundle when None.
        prealign: "auto" (default; the rule in the module doc), "on" or "off".
        refine: instance optimisation after the network (None: the network's field as is).
        fallback: drop the network's deformable step when it lowers the mutual information.
        moving_modality, fixed_modality: the images' modalities (e.g. "T2w"); None: read from
            the file names when they tell. A mismatch with the bundle's record is a note.
        seed: the pre-alignment's sampling seed.
        refine_3d: after the slice-wise field, a 3D instance optimisation on the fixed grid
            (:mod:`uda_core.spatial.volume_refine`: moves tissue across slices too); with
            ``fallback`` it is dropped, with a note, when it lowers the mutual information.
            None (default): off.
        refine_3d_mode: "on" (default): the 3D refinement whenever ``refine_3d`` is given;
            "auto": only for the network and only when step 1 pre-aligned the pair (scans
            of different subjects or grids, where it raised the demo pairs' warped-label
            Dice from 0.58-0.70 to 0.78-0.82; two scans of one session are already aligned
            in 3D; the SimpleITK baseline is left as SimpleITK makes it).
        progress: progress(done, total) after each batch of slices and each step of the 3D
            refinement (total = the slices + its iterations).
        cancel: checked between batches and between 3D steps; when it returns True,
            UdaError("cancelled").
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if prealign not in PREALIGN_MODES:
        raise ValueError(f"prealign must be one of {PREALIGN_MODES}, got {prealign!r}")
    if refine_3d_mode not in REFINE_3D_MODES:
        raise ValueError(f"refine_3d_mode must be one of {REFINE_3D_MODES}, "
                         f"got {refine_3d_mode!r}")
    start = time.perf_counter()
    check_image_content(fixed, "fixed")
    check_image_content(moving, "moving")
    if moving_labels is not None:
        check_same_grid(moving, moving_labels, "label", "the moving image")
    if prealign == "off":
        check_same_grid(fixed, moving, "moving")
    notes: list[str] = []
    if method == "network":
        if bundle is None:
            raise UdaError("registration with a network needs a registration model")
        network = network if network is not None else network_from_bundle(bundle, device)
        mismatch = modality_mismatch(bundle, moving_modality or modality_from_path(moving.source),
                                     fixed_modality or modality_from_path(fixed.source))
        if mismatch:
            notes.append(mismatch)
    grid = ModelGrid.of(bundle)
    affine = _decide_prealign(prealign, fixed, moving, grid, notes, seed)
    seen = moving if affine is None else _through_affine(moving, affine)
    try:
        pair = pair_on_model_grid(fixed, seen, grid, MIN_HEAD_FRACTION)
    except ValueError:  # the moving image is (nearly) constant on the fixed model grid
        raise InputError("does not overlap the fixed image (constant on its grid"
                         f"{' after pre-alignment' if affine is not None else ''})",
                         moving.source) from None
    model_input, moving_slices, head, keep = pair.model_input, pair.moving, pair.head, pair.keep
    assert moving_slices is not None  # a moving volume was given
    overlap = _overlap(seen, model_input, head)
    if overlap < MIN_OVERLAP:
        after = " after pre-alignment" if affine is not None else ""
        raise InputError(f"does not overlap the fixed image{after} (its foreground covers "
                         f"{overlap:.0%} of the fixed head)",
                         moving.source)
    fixed_slices = model_input.slices
    done = [0]
    if refine_3d is not None and refine_3d_mode == "auto":
        if method != "network":        # the SimpleITK baseline stays SimpleITK's alone
            refine_3d = None
        elif affine is None:
            notes.append("not refined in 3D: the pair needed no pre-alignment (one session's "
                         "scans); --refine-3d on refines it anyway")
            refine_3d = None
    # progress counts the slices, then the 3D refinement's steps
    total = len(keep) + (refine_3d.iterations if refine_3d is not None else 0)

    def step(n: int) -> None:
        if cancel is not None and cancel():
            raise UdaError("cancelled")
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    disp = np.zeros((fixed_slices.shape[0], 2, *fixed_slices.shape[1:]), np.float32)
    similarity: dict[str, float] = {}
    fell_back = False
    if len(keep):
        f, m = fixed_slices[keep], moving_slices[keep]
        if method == "network":
            runner = network if refine is None else RefinedRegNet(network, refine)
            disp[keep] = _register_network(runner, f, m, device, batch_size, step)
        else:
            disp[keep] = _register_sitk(f, m, grid.pixel_mm, step)
        similarity["prealigned"] = _similarity(f, m, head[keep])
        warped_slices = warp_image(torch.from_numpy(m)[:, None],
                                   torch.from_numpy(disp[keep])).numpy()[:, 0]
        similarity["registered"] = _similarity(f, warped_slices, head[keep])
        if method == "network" and similarity["registered"] < similarity["prealigned"]:
            what = (f"the learned deformation lowered the mutual information of fixed and "
                    f"warped image ({similarity['prealigned']:.3f} -> "
                    f"{similarity['registered']:.3f})")
            if fallback:
                disp[:] = 0.0
                fell_back = True
                similarity["registered"] = similarity["prealigned"]
                notes.append(f"{what}: kept the pre-aligned result instead (--keep-learned to "
                             "keep it)")
            else:
                notes.append(f"{what}; kept as asked")

    # pixels (dy, dx) along model axes (X, Y) -> world mm, then onto the fixed grid
    linear = model_input.grid_affine[:3, :3]
    model_field = np.einsum("wa,zaxy->wxyz", linear[:, :2], disp)  # (3, X, Y, Z) mm
    field_on_fixed = resample(model_field, model_input.grid_affine, fixed.affine, fixed.shape,
                              order=1, fill=0.0)
    field_mm = np.ascontiguousarray(np.moveaxis(field_on_fixed, 0, -1), dtype=np.float32)
    if affine is not None:
        field_mm = compose_with_affine(field_mm, fixed, affine)
    if refine_3d is not None:
        if cancel is not None and cancel():
            raise UdaError("cancelled")
        head_3d = foreground_mask(np.asarray(fixed.data, np.float32))
        field_mm, warped = _refine_in_3d(fixed, moving, field_mm, refine_3d, fallback,
                                         similarity, notes, head_3d, lambda _: step(1))
        # the written map moves tissue across slices now: its own 3D determinant
        jacobian = jacobian_determinant_mm(field_mm, fixed.affine)
        folding = float((jacobian[head_3d] <= 0).mean()) if head_3d.any() else 0.0
    else:       # the in-plane map's determinant on the model grid's slices
        warped = _sample_through(moving, fixed, field_mm, order=1)
        det = jacobian_determinant(torch.from_numpy(disp)).numpy()  # (Z, X - 1, Y - 1)
        det = np.pad(det, ((0, 0), (0, 1), (0, 1)), mode="edge")  # (Z, X, Y)
        brain = np.zeros_like(head)
        brain[keep] = head[keep]
        folding = float((det[brain] <= 0).mean()) if brain.any() else 0.0
        jacobian = resample(np.moveaxis(det, 0, 2), model_input.grid_affine, fixed.affine,
                            fixed.shape, order=1, fill=1.0)
    labels_warped = None
    if moving_labels is not None:
        labels_warped = fixed.with_data(_sample_through(moving_labels, fixed, field_mm, 0),
                                        source=None, meta={"kind": "labels"})
    return RegistrationResult(
        warped=fixed.with_data(warped, source=None, meta={"kind": "image"}),
        labels_warped=labels_warped,
        field_mm=fixed.with_data(field_mm, source=None, meta={"kind": "displacement_mm"}),
        jacobian=fixed.with_data(jacobian.astype(np.float32), source=None,
                                 meta={"kind": "jacobian"}),
        folding=folding, method=method, seconds=time.perf_counter() - start,
        slices=int(len(keep)), prealign_ras=affine, similarity=similarity,
        fallback=fell_back, notes=notes)


def _refine_in_3d(fixed: Volume, moving: Volume, field_mm: np.ndarray,
                  settings: VolumeRefinement, fallback: bool, similarity: dict,
                  notes: list, head: np.ndarray,
                  after_step: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray]:
    """(field, warped moving image): ``field_mm`` refined in 3D (see
    :func:`register_volumes`), or kept; fills ``similarity`` and ``notes``; ``head``: the
    fixed image's foreground (X, Y, Z) bool, where the similarity is measured; after_step:
    called after each Adam step (progress, cancel)."""
    begin = time.perf_counter()
    first = _sample_through(moving, fixed, field_mm, order=1)
    voxel_mm = tuple(float(v) for v in np.linalg.norm(fixed.affine[:3, :3], axis=0))
    residual = refine_residual(np.asarray(fixed.data, np.float32), first, voxel_mm, settings,
                               after_step)
    refined = compose_residual(field_mm, residual, fixed.affine)
    second = _sample_through(moving, fixed, refined, order=1)
    similarity["before_3d"] = normalised_mutual_information(fixed.data, first, head)
    similarity["after_3d"] = normalised_mutual_information(fixed.data, second, head)
    moved = float(np.linalg.norm(np.tensordot(fixed.affine[:3, :3], residual, 1),
                                 axis=0)[head].mean()) if head.any() else 0.0
    what = (f"3D refinement ({settings.iterations} steps, {time.perf_counter() - begin:.0f} s): "
            f"tissue moved {moved:.1f} mm on average, mutual information "
            f"{similarity['before_3d']:.3f} -> {similarity['after_3d']:.3f}")
    if similarity["after_3d"] < similarity["before_3d"] and fallback:
        notes.append(f"{what}: it lowered the similarity, kept the slice-wise result")
        return field_mm, first
    notes.append(what)
    return refined, second


def output_paths(folder: Path, moving: Path, with_labels: bool) -> dict[str, Path]:
    """{"warped", "field"(, "labels")}: the files :func:`write_outputs` writes in ``folder``."""
    stem = output_stem(moving)
    kinds = ("warped", "labels", "field") if with_labels else ("warped", "field")
    return {kind: Path(folder) / f"{stem}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def write_outputs(result: RegistrationResult, targets: dict[str, Path],
                  inputs: Iterable[Path], replace: Iterable[Path] = ()) -> list[Path]:
    """Write the warped image (float32), warped labels and field (float32, (X, Y, Z, 3) RAS
    mm), each atomically; only files listed in ``replace`` may already exist, and an input
    is never written. Returns the paths written. When one write fails (e.g. OutputError: a
    full disk), the files this call added are removed again before the error is raised, so
    that no incomplete set is left (the replaced ones are complete new files)."""
    protected = [str(p) for p in inputs]
    replace = {Path(p) for p in replace}
    volumes = {"warped": (result.warped, "float32"), "labels": (result.labels_warped, None),
               "field": (result.field_mm, "float32")}
    written = []
    try:
        for kind, path in targets.items():
            volume, dtype = volumes[kind]
            if volume is None:
                continue
            written.append(write_volume(volume, path, dtype=dtype, overwrite=path in replace,
                                        inputs=protected))
    except BaseException:
        for path in written:
            if path not in replace:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    return written
