"""Reading, writing, reorienting and resampling volumes."""

from uda_core.io.geometry import foreground_center, model_grid, resample
from uda_core.io.intensity import DEFAULT_NORMALISATION, foreground_mask, normalise
from uda_core.io.readers import available_memory_bytes, read_labels, read_volume
from uda_core.io.volume import Volume
from uda_core.io.writers import output_stem, write_volume

__all__ = [
    "DEFAULT_NORMALISATION",
    "Volume",
    "available_memory_bytes",
    "foreground_center",
    "foreground_mask",
    "model_grid",
    "normalise",
    "output_stem",
    "read_labels",
    "read_volume",
    "resample",
    "write_volume",
]
