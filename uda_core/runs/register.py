"""Registering volumes slice by slice: the work behind `uda reg apply` and the GUI.

Both volumes must share one voxel grid (same shape and affine): the method is 2D, so it
assumes the fixed and moving images already share their slices. Different grids are refused
(:func:`check_same_grid`) unless the caller resamples the moving image onto the fixed grid
first (:func:`resample_onto`, `uda reg apply --resample-moving`).

Pipeline, for ``method="network"`` (a registration bundle) or ``"sitk"`` (the SimpleITK
B-spline + Mattes MI baseline, :func:`~uda_core.spatial.sitk_bspline.register_bspline_2d`):

1. both volumes go onto the fixed image's model grid (the bundle's spacing, in-plane size and
   normalisation; the default 2 mm, 96 x 112 grid for "sitk" without a bundle), RAS-aligned,
   axial slices;
2. every axial slice whose fixed image shows at least 2 % head (Otsu) is registered: a
   displacement (dy, dx) in model-grid pixels per pixel; other slices keep zero;
3. the field is turned into world millimetres and resampled (trilinear) onto the fixed grid,
   and the ORIGINAL moving image (and labels) are sampled once through it: trilinear for the
   image, nearest neighbour for the labels, edge values beyond the moving volume.

Field convention (``<stem>_field.nii.gz``): float32 (X, Y, Z, 3) on the fixed grid (same
affine), the displacement u in RAS world mm (components R, A, S; S is always 0, the
registration being in-plane) such that ``warped(p) = moving(p + u(p))`` for the world point p
of every fixed voxel (a backward / "pull" field, like ITK's fixed-to-moving transform, but in
RAS rather than ITK's LPS).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from uda_core.errors import InputError, UdaError
from uda_core.grid.model_grid import ModelGrid
from uda_core.grid.pair_slices import MIN_HEAD_FRACTION, pair_on_model_grid
from uda_core.io import Volume
from uda_core.io.geometry import resample
from uda_core.io.writers import output_stem, write_volume
from uda_core.models.bundle import ModelBundle
from uda_core.models.bundle.registration import network_from_bundle
from uda_core.spatial.warp import jacobian_determinant

__all__ = ["METHODS", "OUTPUT_SUFFIXES", "RegistrationResult", "check_same_grid",
           "output_paths", "register_volumes", "resample_onto", "write_outputs"]

# The files `uda reg apply` and the GUI's Save write for a moving image <stem> (DESIGN.md).
OUTPUT_SUFFIXES = {"warped": "_warped.nii.gz", "labels": "_labels_warped.nii.gz",
                   "field": "_field.nii.gz"}

METHODS = ("network", "sitk")
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
    jacobian: (X, Y, Z) float32 determinant of the in-plane map p -> p + u(p) (1 = no area
        change, <= 0 = folded), 1 outside the registered slices.
    folding: share (0..1) of head pixels of the registered model-grid slices with det <= 0.
    method: "network" or "sitk"; seconds: wall time; slices: slices registered.
    """

    warped: Volume
    labels_warped: Volume | None
    field_mm: Volume
    jacobian: Volume
    folding: float
    method: str
    seconds: float
    slices: int


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


def register_volumes(bundle: ModelBundle | None, fixed: Volume, moving: Volume,
                     moving_labels: Volume | None = None, *, device="cpu",
                     method: str = "network", network=None, batch_size: int = 8,
                     progress: Progress | None = None,
                     cancel: Callable[[], bool] | None = None) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` slice by slice (see the module doc).

    Args:
        bundle: a registration bundle (method "network"); for "sitk" optional, it only gives
            the model grid.
        fixed, moving: volumes on one grid (InputError naming ``moving`` otherwise).
        moving_labels: integer labels on ``moving``'s grid, warped by nearest neighbour.
        device: where the network runs. network: an already built network of ``bundle``
            (e.g. adapted weights in the GUI); built from the bundle when None.
        progress: progress(done, total) after each batch of slices.
        cancel: checked between batches; when it returns True, UdaError("cancelled").
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    start = time.perf_counter()
    check_same_grid(fixed, moving, "moving")
    if moving_labels is not None:
        check_same_grid(moving, moving_labels, "label", "the moving image")
    if method == "network":
        if bundle is None:
            raise UdaError("registration with a network needs a registration model")
        network = network if network is not None else network_from_bundle(bundle, device)
    grid = ModelGrid.of(bundle)
    pair = pair_on_model_grid(fixed, moving, grid, MIN_HEAD_FRACTION)
    model_input, moving_slices, head, keep = pair.model_input, pair.moving, pair.head, pair.keep
    assert moving_slices is not None  # a moving volume was given
    fixed_slices = model_input.slices
    done = [0]

    def step(n: int) -> None:
        if cancel is not None and cancel():
            raise UdaError("cancelled")
        done[0] += n
        if progress is not None:
            progress(done[0], len(keep))

    disp = np.zeros((fixed_slices.shape[0], 2, *fixed_slices.shape[1:]), np.float32)
    if len(keep):
        f, m = fixed_slices[keep], moving_slices[keep]
        if method == "network":
            disp[keep] = _register_network(network, f, m, device, batch_size, step)
        else:
            disp[keep] = _register_sitk(f, m, grid.pixel_mm, step)

    det = jacobian_determinant(torch.from_numpy(disp)).numpy()  # (Z, X - 1, Y - 1)
    det = np.pad(det, ((0, 0), (0, 1), (0, 1)), mode="edge")  # (Z, X, Y)
    brain = np.zeros_like(head)
    brain[keep] = head[keep]
    folding = float((det[brain] <= 0).mean()) if brain.any() else 0.0

    # pixels (dy, dx) along model axes (X, Y) -> world mm, then onto the fixed grid
    linear = model_input.grid_affine[:3, :3]
    model_field = np.einsum("wa,zaxy->wxyz", linear[:, :2], disp)  # (3, X, Y, Z) mm
    field = resample(model_field, model_input.grid_affine, fixed.affine, fixed.shape,
                     order=1, fill=0.0)
    field_mm = np.ascontiguousarray(np.moveaxis(field, 0, -1), dtype=np.float32)
    jacobian = resample(np.moveaxis(det, 0, 2), model_input.grid_affine, fixed.affine,
                        fixed.shape, order=1, fill=1.0)
    warped = _sample_through(moving, fixed, field_mm, order=1)
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
        slices=int(len(keep)))


def output_paths(folder: Path, moving: Path, with_labels: bool) -> dict[str, Path]:
    """{"warped", "field"(, "labels")}: the files :func:`write_outputs` writes in ``folder``."""
    stem = output_stem(moving)
    kinds = ("warped", "labels", "field") if with_labels else ("warped", "field")
    return {kind: Path(folder) / f"{stem}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def write_outputs(result: RegistrationResult, targets: dict[str, Path],
                  inputs: Iterable[Path], replace: Iterable[Path] = ()) -> list[Path]:
    """Write the warped image (float32), warped labels and field (float32, (X, Y, Z, 3) RAS
    mm), each atomically; only files listed in ``replace`` may already exist, and an input
    is never written. Returns the paths written."""
    protected = [str(p) for p in inputs]
    replace = {Path(p) for p in replace}
    volumes = {"warped": (result.warped, "float32"), "labels": (result.labels_warped, None),
               "field": (result.field_mm, "float32")}
    written = []
    for kind, path in targets.items():
        volume, dtype = volumes[kind]
        if volume is None:
            continue
        written.append(write_volume(volume, path, dtype=dtype, overwrite=path in replace,
                                    inputs=protected))
    return written
