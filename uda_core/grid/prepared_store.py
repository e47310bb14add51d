"""Prepared volumes kept on disk instead of in memory, for runs on many targets.

:class:`ArrayStore` holds arrays as ``.npy`` files and gives each back memory-mapped when
indexed, so reading a few slices of it reads only those slices, and the mapping closes when
the caller drops it: the run's memory stays that of the slices in use, whatever the number
of volumes. :class:`PreparedStore` is a sequence of :class:`ModelInput` whose ``slices``
(Z, X, Y) float32 live in an ArrayStore (grid affine, shape and slice positions stay in
memory: a few hundred bytes each). :class:`ReadOnAccess` is a sequence of volumes read from
their files each time they are indexed (for mapping outputs back onto each input's grid).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from uda_core.grid.prepare import ModelInput
from uda_core.io.readers import read_volume
from uda_core.io.volume import Volume


class ArrayStore(Sequence[np.ndarray]):
    """Arrays in FOLDER/<name>-<index>.npy, appended in order, read back memory-mapped
    (read-only)."""

    def __init__(self, folder: str | os.PathLike, name: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._count = 0

    def _path(self, index: int) -> Path:
        return self.folder / f"{self.name}-{index:06d}.npy"

    def append(self, array: np.ndarray) -> None:
        np.save(self._path(self._count), np.ascontiguousarray(array), allow_pickle=False)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return np.load(self._path(index % self._count), mmap_mode="r", allow_pickle=False)


class PreparedStore(Sequence[ModelInput]):
    """ModelInputs whose slices are on disk (see the module doc), in ``folder``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._slices = ArrayStore(folder, "slices")
        self._grids: list[tuple[np.ndarray, tuple[int, int, int], np.ndarray]] = []

    def append(self, model_input: ModelInput) -> None:
        self._slices.append(model_input.slices)
        self._grids.append((model_input.grid_affine, model_input.grid_shape,
                            model_input.positions))

    def __len__(self) -> int:
        return len(self._grids)

    @overload
    def __getitem__(self, index: int) -> ModelInput: ...
    @overload
    def __getitem__(self, index: slice) -> list[ModelInput]: ...

    def __getitem__(self, index: int | slice) -> ModelInput | list[ModelInput]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        affine, shape, positions = self._grids[index]
        return ModelInput(self._slices[index], affine, shape, positions)


class ReadOnAccess(Sequence[Volume]):
    """The volumes in `paths`, each read from its file when indexed (nothing kept)."""

    def __init__(self, paths: Sequence[str | os.PathLike]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> Volume: ...
    @overload
    def __getitem__(self, index: slice) -> list[Volume]: ...

    def __getitem__(self, index: int | slice) -> Volume | list[Volume]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return read_volume(self.paths[index])
