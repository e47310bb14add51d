"""The viewer's layers of the segmentation panel: each target image, its reference labels,
and per run the mask before adaptation and the live (then adapted) mask of each target.
Touched on the GUI thread only.

Layer names: "<stem>" (image), "<stem> reference" (labels given by the user, evaluation
only), "run N · <method> · before <stem>" (the model's mask before adaptation) and
"run N · <method> · mask <stem>" (refreshed during run N; at its end, the mask of the chosen
checkpoint). A new run adds its own mask layers: earlier runs' stay until the user removes
them.

Speed: adding a napari layer costs about 0.25 CPU s on the GUI thread (vispy visuals, the
labels tool overlays, the layer controls widget; BENCHMARKS.md, issue 17), holding the GIL
that the run's thread needs between its torch calls. A run with previews therefore gets its
layers, empty, from :meth:`MaskLayers.prepare_run` before its worker starts, and the engine's
previews only replace their data (a few ms each). The layers a run never filled (it stopped
or failed before its first previews) are removed by :meth:`MaskLayers.discard_unfilled`, so a
run leaves only masks it made.
"""

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
    """Targets are known by path (str); during a run, by their index in the run's targets."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.volumes: dict[str, Volume] = {}
        self.class_names: list[str] = ["background", "CSF", "GM", "WM"]
        self.run_number = 0
        self.run_name = ""
        self.run_targets: list[str] = []
        self._unfilled: set[str] = set()   # the current run's layers that hold no mask yet

    def _get(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @staticmethod
    def stem(path) -> str:
        return output_stem(Path(path))

    # -- targets and references ---------------------------------------------------------------
    def show_target(self, path, volume: Volume) -> None:
        """The target's image layer (once); only the first target shown is visible (subjects
        overlap in world space: one at a time)."""
        path = str(path)
        first = not self.volumes
        self.volumes[path] = volume
        if self._get(self.stem(path)) is None:
            layer = add_layer(self.viewer, image_layer(volume, self.stem(path)))
            layer.visible = first
            if first:
                self.viewer.layers.selection.active = layer

    def show_reference(self, target_path, labels: Volume) -> None:
        name = f"{self.stem(target_path)} reference"
        if self._get(name) is None:
            layer = add_layer(self.viewer, labels_layer(
                labels.data.astype(np.uint8), labels.affine, self.class_names, name))
            layer.visible = False

    # -- one run's masks ------------------------------------------------------------------------
    def begin_run(self, method: str, targets) -> str:
        """A new run over `targets` (paths, in the run's order); returns its name."""
        self.run_number += 1
        self.run_name = f"run {self.run_number} · {method}"
        self.run_targets = [str(t) for t in targets]
        self._unfilled.clear()   # an earlier run's empty layers are its own
        return self.run_name

    def mask_name(self, index: int, before: bool = False) -> str:
        stem = self.stem(self.run_targets[index])
        return f"{self.run_name} · {'before' if before else 'mask'} {stem}"

    def prepare_run(self) -> None:
        """Add the current run's mask layers (before and live, of each target whose image is
        shown), all background, and make target 0's live mask the active layer (the one the
        previews show). Call before the run's worker starts (see the module doc)."""
        for index, path in enumerate(self.run_targets):
            volume = self.volumes.get(path)
            if volume is None:
                continue
            empty = np.zeros(volume.data.shape, np.uint8)
            for before in (True, False):
                if self._get(self.mask_name(index, before)) is None:
                    self._add_mask(index, empty, before)
                    self._unfilled.add(self.mask_name(index, before))
        if self.run_targets:
            self.show_only_image(self.run_targets[0])
        self.select_mask(0)

    def show_only_image(self, path) -> None:
        """Make the image of target `path` the one visible image (the live mask shown is
        run target 0's; the first image shown is whichever target finished reading first)."""
        for shown in self.volumes:
            layer = self._get(self.stem(shown))
            if layer is not None:
                layer.visible = shown == str(path)

    def discard_unfilled(self) -> None:
        """Remove the current run's layers that never received a mask."""
        for name in sorted(self._unfilled):
            layer = self._get(name)
            if layer is not None:
                self.viewer.layers.remove(layer)
        self._unfilled.clear()

    def _add_mask(self, index: int, labels: np.ndarray, before: bool):
        volume = self.volumes[self.run_targets[index]]
        return add_layer(self.viewer, labels_layer(
            labels, volume.affine, self.class_names, self.mask_name(index, before),
            visible=index == 0 and not before))

    def show_mask(self, index: int, labels: np.ndarray, *, before: bool) -> None:
        """labels: (X, Y, Z) uint8 on the grid of the run's target `index`. Fills the run's
        layer (one ``set_data``) or, when the run has none yet, adds it."""
        if not 0 <= index < len(self.run_targets):
            return
        volume = self.volumes.get(self.run_targets[index])
        if volume is None:
            return
        name = self.mask_name(index, before)
        layer = self._get(name)
        if layer is None:
            self._add_mask(index, labels, before)
            if index == 0 and not before:   # a run without prepared layers
                self.show_only_image(self.run_targets[0])
        else:
            layer.data = np.ascontiguousarray(to_display(labels, volume.affine)[0])
        self._unfilled.discard(name)

    def mask_data(self, index: int, before: bool = False) -> np.ndarray | None:
        """The current run's mask of target `index` as displayed, or None."""
        if not 0 <= index < len(self.run_targets):
            return None
        name = self.mask_name(index, before)
        layer = None if name in self._unfilled else self._get(name)
        return None if layer is None else np.asarray(layer.data)

    def select_mask(self, index: int) -> None:
        layer = self._get(self.mask_name(index)) if index < len(self.run_targets) else None
        if layer is not None:
            self.viewer.layers.selection.active = layer

    def run_index_of_layer(self, layer) -> int | None:
        """The index, among the current run's targets, of the target a selected layer belongs
        to (its image, reference or one of its masks)."""
        if layer is None:
            return None
        for index, path in enumerate(self.run_targets):
            stem = self.stem(path)
            if (layer.name == stem or layer.name.startswith(stem + " ")
                    or layer.name.endswith(" " + stem)):
                return index
        return None
