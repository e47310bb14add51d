"""The one in-memory image type: a voxel array placed in the world by an affine."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import nibabel as nib
import numpy as np


@dataclass
class Volume:
    """A 3D image or label map in world coordinates.

    Attributes:
        data: voxel array of shape (X, Y, Z), indexed in the order the affine expects.
        affine: 4x4 matrix mapping voxel indices (i, j, k, 1) to RAS+ world millimetres
            (the NIfTI/nibabel convention, also used for files read with SimpleITK).
        source: where it came from (file or folder path), for messages; None if made in memory.
        header: the nibabel header of a NIfTI/MGZ input, kept so outputs can mirror it.
        meta: free-form metadata (e.g. DICOM series description, original reader).
    """

    data: np.ndarray
    affine: np.ndarray
    source: str | None = None
    header: Any = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along each array axis in mm (length of each affine column)."""
        x, y, z = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(x), float(y), float(z)

    @property
    def orientation(self) -> str:
        """Closest anatomical axis codes, e.g. 'RAS' or 'LPS'."""
        return "".join(nib.aff2axcodes(self.affine))

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """Whether both volumes have the same shape and (within atol_mm) the same affine."""
        return self.shape == other.shape and bool(
            np.allclose(self.affine, other.affine, atol=atol_mm))

    def with_data(self, data: np.ndarray, **changes: Any) -> Volume:
        """The same grid (affine, source, header) holding other voxels."""
        return replace(self, data=data, **changes)
