"""The model grid as one value: where a network's slices live.

A model grid is RAS-aligned with voxels of ``spacing_mm`` (x, y, z mm), ``in_plane_shape``
(X, Y voxels) in the axial plane (``slice_axis`` 2 of the (X, Y, Z) grid, ``orientation``
"RAS"), centred on the head and covering the whole volume along z
(:func:`uda_core.io.geometry.model_grid` places it), and intensities normalised by
``normalisation`` (:func:`uda_core.io.intensity.normalise`). A model bundle stores these same
fields (its file format is unchanged); :meth:`ModelGrid.of` reads them from a bundle, a
training config, a mapping or None (:data:`DEFAULT_GRID`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from uda_core.io.intensity import DEFAULT_NORMALISATION

__all__ = ["DEFAULT_GRID", "ModelGrid"]


@dataclass(frozen=True)
class ModelGrid:
    """spacing_mm (x, y, z mm), in_plane_shape (X, Y voxels), orientation, slice_axis and
    normalisation of a model grid. Immutable: the normalisation is a read-only mapping.

    The defaults are the demo models' grid (demo:brain-t1, demo:reg-t1): 2 mm, 96 x 112, RAS,
    axial slices, percentile z-score normalisation on the Otsu foreground.
    """

    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    in_plane_shape: tuple[int, int] = (96, 112)
    orientation: str = "RAS"
    slice_axis: int = 2
    normalisation: Mapping[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_NORMALISATION), hash=False)

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing_mm)
        shape = tuple(int(s) for s in self.in_plane_shape)
        if len(spacing) != 3 or any(s <= 0 for s in spacing):
            raise ValueError(f"spacing_mm must be three positive numbers, got {spacing}")
        if len(shape) != 2 or any(s < 1 for s in shape):
            raise ValueError(f"in_plane_shape must be two positive ints, got {shape}")
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "in_plane_shape", shape)
        object.__setattr__(self, "slice_axis", int(self.slice_axis))
        object.__setattr__(self, "normalisation", MappingProxyType(dict(self.normalisation)))

    @classmethod
    def of(cls, source: Any = None) -> ModelGrid:
        """The model grid of ``source``: a ModelGrid (itself), None (:data:`DEFAULT_GRID`), a
        mapping with keys or any object with attributes (a ModelBundle, a training config)
        ``spacing_mm``, ``in_plane_shape`` and ``normalisation``; ``orientation`` and
        ``slice_axis`` are read when present (else RAS, 2)."""
        if source is None:
            return DEFAULT_GRID
        if isinstance(source, ModelGrid):
            return source
        return cls(spacing_mm=_read(source, "spacing_mm"),
                   in_plane_shape=_read(source, "in_plane_shape"),
                   orientation=_read(source, "orientation", "RAS"),
                   slice_axis=_read(source, "slice_axis", 2),
                   normalisation=_read(source, "normalisation"))

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """(row, column) size of one slice pixel in mm: spacing_mm[:2]."""
        return self.spacing_mm[0], self.spacing_mm[1]

    def bundle_fields(self) -> dict[str, Any]:
        """The grid as a ModelBundle stores it: keyword arguments of ``ModelBundle(...)``
        (lists and a plain dict, as in the bundle file)."""
        return {"spacing_mm": [float(s) for s in self.spacing_mm],
                "in_plane_shape": [int(s) for s in self.in_plane_shape],
                "orientation": str(self.orientation), "slice_axis": int(self.slice_axis),
                "normalisation": dict(self.normalisation)}


_REQUIRED = object()


def _read(source: Any, name: str, default: Any = _REQUIRED) -> Any:
    """``source[name]`` of a mapping or ``source.name`` of an object; KeyError /
    AttributeError without a default."""
    if isinstance(source, Mapping):
        return source[name] if default is _REQUIRED else source.get(name, default)
    return getattr(source, name) if default is _REQUIRED else getattr(source, name, default)


DEFAULT_GRID = ModelGrid()
