"""A long engine run on a tiny network and tiny data, with the process's memory sampled.

5,000 tent steps of conftest's 4-class U-Net (4 base channels, 32 x 32 model grid) on one
small scan (conftest's blob volume, 24 x 28 x 14 voxels at 2 mm), two slices per batch, at
the engine's default scoring and checkpoint rates (every 50 steps), the app's preview rate
(every 25 steps, app/segmentation/panel.py GUI_PREVIEW_EVERY) and the metrics file written
every step; a listener that keeps only the latest preview (as the app's layer
update does). Memory is the resident set size (RSS, from /proc/self/statm) every 250 steps.
Used by tests/faults/test_long_run.py and scripts/long_run_memory.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

GUI_PREVIEW_EVERY = 25   # app/segmentation/panel.py (the core cannot import the app)


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def long_run(out_dir: Path, steps: int = 5000, sample_every: int = 250) -> dict[int, float]:
    """Run it; {step: RSS in MiB} at every `sample_every` steps (and step 1)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.conftest import blob_volume, make_seg_bundle, write_nifti
    from uda_core.engine import Engine, EngineConfig
    from uda_core.engine.events import PreviewEvent, StepEvent
    from uda_core.engine.listeners import MetricsWriter
    from uda_core.methods.tent import Tent, TentConfig
    from uda_core.tasks.segmentation import SegmentationTask
    from uda_core.tasks.segmentation_data import load_adaptation_data

    out_dir.mkdir(parents=True, exist_ok=True)
    scan = write_nifti(out_dir / "scan.nii.gz", blob_volume())
    bundle = make_seg_bundle()
    method = Tent(bundle.build_network(), bundle, TentConfig(), torch.device("cpu"))
    config = EngineConfig(steps=steps, batch_size=2, score_slices=8, skip_empty_slices=False,
                          collapse_guard=False, select_by="last",
                          preview_every=GUI_PREVIEW_EVERY)
    memory: dict[int, float] = {}
    latest: dict[str, PreviewEvent] = {}

    def listener(event) -> None:
        if isinstance(event, PreviewEvent):
            latest["preview"] = event           # the app shows the latest, drops the rest
        elif isinstance(event, StepEvent) and (event.step % sample_every == 0
                                               or event.step == 1):
            memory[event.step] = rss_mib()

    metrics = MetricsWriter(out_dir / "metrics.jsonl")
    try:
        task = SegmentationTask(method, load_adaptation_data(bundle, [scan]), config)
        Engine(method, task, config, out_dir, [metrics, listener]).run()
    finally:
        metrics.close()
    return memory
