"""The viewer's layers for one adaptation: target images, reference labels, the mask before
adaptation and the live (then adapted) mask of each target. Touched on the GUI thread only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uda_core.io import Volume
from uda_core.io.writers import output_stem

from ..layers import image_layer, labels_layer, to_display


def add_layer(viewer, layer_tuple):
    """Add a (data, kwargs, layer_type) tuple to `viewer`; returns the layer."""
    data, kwargs, layer_type = layer_tuple
    return getattr(viewer, f"add_{layer_type}")(data, **kwargs)


class MaskLayers:
    """Names: "<stem>" (image), "<stem> reference" (labels given by the user, evaluation
    only), "<stem> before" (the model's mask before adaptation), "<stem> adapted" (refreshed
    during the run; at the end, the mask of the chosen checkpoint)."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.volumes: dict[int, Volume] = {}
        self.stems: dict[int, str] = {}
        self.class_names: list[str] = ["background", "CSF", "GM", "WM"]

    def _get(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def set_targets(self, paths) -> None:
        """Name the targets (before their volumes are read, so every layer is named alike)."""
        self.stems = {i: output_stem(Path(p)) for i, p in enumerate(paths)}

    def show_target(self, index: int, path: Path, volume: Volume) -> None:
        stem = output_stem(Path(path))
        self.volumes[index], self.stems[index] = volume, stem
        if self._get(stem) is None:
            layer = add_layer(self.viewer, image_layer(volume, stem))
            layer.visible = index == 0  # subjects overlap in world space: show one at a time

    def select(self, index: int, suffix: str = "") -> None:
        """Make target `index`'s layer (or its "<stem> <suffix>" mask) the active one."""
        layer = self._get(f"{self.stems.get(index)}{' ' + suffix if suffix else ''}")
        if layer is not None:
            self.viewer.layers.selection.active = layer

    def show_reference(self, index: int, labels: Volume) -> None:
        name = f"{self.stems.get(index, index)} reference"
        if self._get(name) is None:
            layer = add_layer(self.viewer, labels_layer(
                labels.data.astype(np.uint8), labels.affine, self.class_names, name))
            layer.visible = False

    def show_mask(self, index: int, labels: np.ndarray, *, before: bool) -> None:
        """labels: (X, Y, Z) uint8 on target `index`'s own grid."""
        volume = self.volumes.get(index)
        if volume is None:
            return
        name = f"{self.stems[index]} {'before' if before else 'adapted'}"
        layer = self._get(name)
        if layer is None:
            layer = add_layer(self.viewer, labels_layer(labels, volume.affine, self.class_names,
                                                         name))
            layer.opacity = 0.5
            layer.visible = index == 0 and not before
        else:
            layer.data = np.ascontiguousarray(to_display(labels, volume.affine)[0])

    def mask_data(self, index: int, before: bool = False) -> np.ndarray | None:
        layer = self._get(f"{self.stems.get(index)} {'before' if before else 'adapted'}")
        return None if layer is None else np.asarray(layer.data)

    def index_of_layer(self, layer) -> int | None:
        """The target index a selected layer belongs to (image or one of its masks)."""
        if layer is None:
            return None
        for index, stem in self.stems.items():
            if layer.name == stem or layer.name.startswith(stem + " "):
                return index
        return None
