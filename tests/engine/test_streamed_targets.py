"""Targets streamed from disk give the run exactly what targets held in memory give."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import blob_volume, make_seg_bundle_3d, write_nifti
from uda_core.engine import EngineConfig
from uda_core.exports.masks import write_masks
from uda_core.methods.tent import Tent, TentConfig
from uda_core.models.bundle import load_model
from uda_core.tasks.segmentation import SegmentationTask
from uda_core.tasks.segmentation_data import load_adaptation_data


def _files(tmp_path, n=4):
    targets, paired, labels = [], [], []
    for i in range(n):
        shape = (20 + 2 * i, 24, 10 + i)
        targets.append(write_nifti(tmp_path / f"t{i}.nii.gz", blob_volume(shape, seed=i)))
        paired.append(write_nifti(tmp_path / f"p{i}.nii.gz", blob_volume(shape, seed=10 + i)))
        labels.append(write_nifti(tmp_path / f"l{i}.nii.gz",
                                  (blob_volume(shape, seed=i) > 50).astype(np.uint8)))
    return targets, paired, labels


def test_streamed_targets_give_the_same_batches_scores_and_masks(tmp_path, tiny_bundle_path):
    targets, paired, labels = _files(tmp_path)
    bundle = load_model(tiny_bundle_path)
    config = EngineConfig(batch_size=6, score_slices=12, seed=3)
    tasks, datas = [], []
    for cache in (None, tmp_path / "cache"):
        data = load_adaptation_data(bundle, targets, paired=paired, reference=labels,
                                    cache_dir=cache)
        method = Tent(bundle.build_network(), bundle, TentConfig(), torch.device("cpu"))
        tasks.append(SegmentationTask(method, data, config))
        datas.append(data)
    in_memory, streamed = tasks
    assert isinstance(datas[0].inputs, list) and not isinstance(datas[1].inputs, list)
    assert isinstance(datas[1].inputs[0].slices, np.memmap)   # read from disk, not held
    np.testing.assert_array_equal(in_memory.pool.volume, streamed.pool.volume)
    rngs = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(5):
        a, b = (task.sample_batch(rng) for task, rng in zip(tasks, rngs, strict=True))
        for name in ("target", "positions", "paired_source"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    for key in ("images", "reference"):
        assert torch.equal(in_memory._score_set[key], streamed._score_set[key])
    written = [write_masks(tasks[0].network, data, targets, tmp_path / f"masks{k}",
                           torch.device("cpu")) for k, data in enumerate(datas)]
    for first, second in zip(*written, strict=True):
        from uda_core.io.readers import read_labels
        np.testing.assert_array_equal(read_labels(first).data, read_labels(second).data)


def test_a_streamed_run_writes_its_outputs_and_removes_its_cache(tmp_path, tiny_bundle_path):
    from uda_core.runs.adapt import run_adaptation
    targets, _, _ = _files(tmp_path, 3)
    out = tmp_path / "run"
    summary = run_adaptation(tiny_bundle_path, "tent", targets, out, device="cpu",
                             engine_settings={"steps": 2, "batch_size": 4, "score_every": 1},
                             stream_targets=True)
    assert summary["status"] == "completed" and len(summary["masks"]) == 3
    assert (out / "adapted.pt").is_file()
    assert not list(out.glob(".prepared-*"))


def test_streamed_3d_targets_give_the_same_patches_and_scores(tmp_path):
    from uda_core.tasks.segmentation_patches import PatchSegmentationTask
    targets, paired, _ = _files(tmp_path)
    bundle = make_seg_bundle_3d(mirror_axes=())
    config = EngineConfig(batch_size=3, score_slices=4, seed=3)
    tasks = []
    for cache in (None, tmp_path / "cache"):
        data = load_adaptation_data(bundle, targets, paired=paired, cache_dir=cache)
        method = Tent(bundle.build_network(), bundle, TentConfig(), torch.device("cpu"))
        tasks.append(PatchSegmentationTask(method, data, config))
    in_memory, streamed = tasks
    assert not isinstance(in_memory.patches.volumes[0], np.memmap)
    for pool in (streamed.patches.volumes, streamed.patches.heads, streamed.patches.paired):
        assert isinstance(pool[0], np.memmap)   # read from disk, not held
    rngs = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(5):
        a, b = (task.sample_batch(rng) for task, rng in zip(tasks, rngs, strict=True))
        assert a.target.shape == a.paired_source.shape == (3, 1, 16, 16, 16)
        for name in ("target", "positions", "paired_source"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(in_memory._score_set["images"], streamed._score_set["images"])


def test_a_streamed_3d_run_writes_its_masks_and_removes_its_cache(tmp_path):
    from uda_core.models.bundle import save_bundle
    from uda_core.runs.adapt import run_adaptation
    targets, _, _ = _files(tmp_path, 3)
    model = save_bundle(make_seg_bundle_3d(mirror_axes=()), tmp_path / "tiny3d.pt")
    out = tmp_path / "run"
    summary = run_adaptation(str(model), "tent", targets, out, device="cpu",
                             engine_settings={"steps": 2, "batch_size": 2, "score_every": 1},
                             stream_targets=True)
    assert summary["status"] == "completed" and len(summary["masks"]) == 3
    assert load_model(out / "adapted.pt").dims == 3
    assert not list(out.glob(".prepared-*"))
