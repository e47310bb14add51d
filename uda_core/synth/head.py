"""A procedural head around a simulated brain: what a real scan shows besides the brain.

Real scans hold scalp, skull, fat, eyes, neck and noisy air around the brain. The demo
subjects' brains come from the MNI template (brain only), so the rest of the head is built
here, in the subject's own space, around its deformed brain mask (SynthStrip-style: shells of
random, smoothly varying thickness, tissues with per-subject random proton density):

- by distance d from the brain: the dura and arachnoid (``dura``: a thin fibrous membrane
  with its own short-T2 signal), the skull's inner table (``bone``), the diploe
  (``marrow``, fatty), the outer table (``bone``). No free fluid lies outside the brain
  mask: the template's mask already holds the subarachnoid CSF (labelled CSF), so fluid
  outside it labelled background would draw a boundary the image does not show;
- a neck below the brain (muscle, with the spinal cord in its canal and a vertebral ring),
  the face and orbits in front of and below the frontal lobes (eyes: vitreous fluid, orbit
  fat; face: muscle and fat with air-filled sinuses);
- over the whole head envelope, subcutaneous fat and skin (``fat``, ``muscle``);
- air outside (no tissue: the scanner's noise only).

Every non-brain voxel is background in the labels. Geometry is derived from the brain mask's
bounding box and brainstem, so it follows each subject's deformation. All lengths are mm;
arrays are (X, Y, Z) on an RAS grid with isotropic voxels of ``voxel_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

from uda_core.synth import contrast

HEAD_TISSUES = ("csf", "bone", "marrow", "fat", "muscle", "cord", "dura")
"""Non-brain tissues, in the order of :func:`simulate_head`'s fractions."""

HEAD_PADDING_MM = 24.0
"""Field of view of a subject with a head: the template's brain box grown by this much."""


@dataclass(frozen=True)
class HeadShape:
    """Mean thickness (mm) of each shell around the brain; each varies smoothly over the head
    by +-``variation`` (relative std) and is drawn per subject within +-``spread``."""

    dura_mm: float = 1.2
    inner_table_mm: float = 1.5
    diploe_mm: float = 3.0
    outer_table_mm: float = 1.5
    fat_mm: float = 5.0
    skin_mm: float = 2.5
    variation: float = 0.25
    spread: float = 0.35
    eye_radius_mm: float = 11.5


def _smooth(shape, voxel_mm: float, rng: np.random.Generator, sigma_mm: float = 18.0) -> np.ndarray:
    return contrast.smooth_field(shape, voxel_mm, rng, sigma_mm=sigma_mm,
                                 lattice_mm=max(4.0, sigma_mm / 3), channels=1)[0]


def _thickness(mean_mm: float, shape, voxel_mm: float, rng: np.random.Generator,
               head: HeadShape) -> np.ndarray:
    """A per-voxel shell thickness: the subject's mean (mean * U(1 - spread, 1 + spread))
    times (1 + variation * smooth field), at least a third of the mean."""
    subject_mean = mean_mm * rng.uniform(1 - head.spread, 1 + head.spread)
    field = 1.0 + head.variation * _smooth(shape, voxel_mm, rng)
    return np.maximum(subject_mean * field, mean_mm / 3).astype(np.float32)


def _coordinates(shape, affine: np.ndarray) -> list[np.ndarray]:
    """World x, y, z (mm) of each axis of an RAS-diagonal grid, as broadcastable vectors."""
    axes = []
    for k, n in enumerate(shape):
        values = affine[k, k] * np.arange(n, dtype=np.float32) + np.float32(affine[k, 3])
        view = [1, 1, 1]
        view[k] = n
        axes.append(values.reshape(view))
    return axes


def simulate_head(brain: np.ndarray, affine: np.ndarray, rng: np.random.Generator,
                  head: HeadShape | None = None) -> np.ndarray:
    """Tissue fractions of a head around `brain`: (len(HEAD_TISSUES), X, Y, Z) float32, each
    voxel 0 or 1 (partial volume comes from the caller's area averaging), 0 inside the brain.

    Args:
        brain: (X, Y, Z) bool brain mask on an RAS grid with isotropic voxels.
        affine: its 4x4 voxel -> RAS mm affine (diagonal).
        rng: the subject's random stream (thicknesses, shapes).
        head: mean shell thicknesses (default :class:`HeadShape`).
    """
    head = head or HeadShape()
    voxel = float(abs(affine[0, 0]))
    shape = brain.shape
    x, y, z = _coordinates(shape, affine)
    d_brain = distance_transform_edt(~brain, sampling=voxel).astype(np.float32)

    edges = np.cumsum([_thickness(t, shape, voxel, rng, head) for t in
                       (head.dura_mm, head.inner_table_mm, head.diploe_mm,
                        head.outer_table_mm)], axis=0)
    shell = ~brain & (d_brain < edges[-1])

    # Landmarks from the brain's box and its lowest part (the brainstem).
    idx = np.argwhere(brain)
    lo = np.array([float(a.ravel()[i]) for a, i in zip((x, y, z), idx.min(0), strict=True)])
    hi = np.array([float(a.ravel()[i]) for a, i in zip((x, y, z), idx.max(0), strict=True)])
    mid_x = 0.5 * (lo[0] + hi[0])
    bottom = idx[:, 2] <= idx[:, 2].min() + max(1, round(6 / voxel))
    stem = idx[bottom].mean(0)
    stem_x = float(x.ravel()[int(round(stem[0]))])
    stem_y = float(y.ravel()[int(round(stem[1]))])
    height = hi[2] - lo[2]

    # Neck: an elliptic column below the temporal lobes, centred a little in front of the stem.
    neck_top = lo[2] + 0.25 * height
    rx, ry = rng.uniform(48, 60), rng.uniform(44, 54)
    cy = stem_y + rng.uniform(0, 12)
    neck = (((x - stem_x) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0) & (z < neck_top)
    # Face below the frontal lobes, in front of the neck; eyes in their orbits.
    eye_z = lo[2] + rng.uniform(0.20, 0.25) * height
    eye_y = hi[1] - rng.uniform(16, 22)
    face = ((((x - mid_x) / 52.0) ** 2 + ((y - (eye_y - 20)) / 45.0) ** 2
             + ((z - (eye_z - 25)) / 42.0) ** 2) <= 1.0) & (y > cy - 10)
    eyes = np.zeros(shape, dtype=bool)
    orbits = np.zeros(shape, dtype=bool)
    for side in (-1, 1):
        ex = mid_x + side * rng.uniform(29, 35)
        r2 = (x - ex) ** 2 + (y - eye_y) ** 2 + (z - eye_z) ** 2
        eyes |= r2 <= head.eye_radius_mm ** 2
        orbits |= r2 <= (head.eye_radius_mm + 5.0) ** 2
    sinuses = np.zeros(shape, dtype=bool)
    for centre, radii in (((mid_x, eye_y - 12, eye_z - 28), (20.0, 14.0, 14.0)),   # maxillary
                          ((mid_x, eye_y + 4, eye_z + 14), (12.0, 7.0, 8.0))):     # frontal
        sinuses |= (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                    + ((z - centre[2]) / radii[2]) ** 2) <= 1.0

    skin = _thickness(head.skin_mm, shape, voxel, rng, head)
    fat = skin + _thickness(head.fat_mm, shape, voxel, rng, head)
    envelope = (shell | neck | face | orbits | (d_brain < edges[-1] + fat)) & ~brain
    d_env = distance_transform_edt(envelope | brain, sampling=voxel).astype(np.float32)

    names = {name: k for k, name in enumerate(HEAD_TISSUES)}
    tissue = np.full(shape, -1, dtype=np.int8)           # index into HEAD_TISSUES; -1 = air
    tissue[envelope] = names["muscle"]
    strands = _smooth(shape, voxel, rng, sigma_mm=3.0) > 0.9   # fat strands in face and neck
    tissue[(face | neck) & strands & envelope] = names["fat"]
    tissue[face & sinuses & ~shell] = -1
    tissue[orbits & ~shell] = names["fat"]
    tissue[eyes & ~shell] = names["csf"]                  # vitreous: free water, as CSF
    for edge, name in ((edges[3], "bone"), (edges[2], "marrow"), (edges[1], "bone"),
                       (edges[0], "dura")):               # skull shells, outermost first
        tissue[shell & (d_brain < edge)] = names[name]
    below = (z < lo[2]) & envelope                       # the spinal canal under the brain
    r_stem2 = (x - stem_x) ** 2 + (y - stem_y) ** 2
    tissue[below & (r_stem2 < 16.0 ** 2)] = names["bone"]
    tissue[below & (r_stem2 < 8.0 ** 2)] = names["csf"]
    tissue[below & (r_stem2 < 5.0 ** 2)] = names["cord"]
    outside_skull = envelope & ~(shell & (d_brain < edges[-1]))
    tissue[outside_skull & (d_env <= fat)] = names["fat"]  # subcutaneous fat, then skin
    tissue[envelope & (d_env <= skin)] = names["muscle"]
    tissue[brain] = -1

    out = np.zeros((len(HEAD_TISSUES),) + shape, dtype=np.float32)
    for k in range(len(HEAD_TISSUES)):
        out[k] = tissue == k
    return out
