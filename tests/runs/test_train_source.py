"""Source training with augmentation (`SourceTrainingConfig.augment`) on two tiny labelled
"brains": it runs, stays deterministic per seed, records the augmentation in the bundle's
provenance, and never augments the validation slices."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_nifti
from uda_core.runs.train_segmentation import SourceTrainingConfig, train_source_model

# a 4-class U-Net with 4 base channels on a 4 mm, 16 x 16 model grid, one epoch of each phase
TINY = SourceTrainingConfig(spacing_mm=(4.0, 4.0, 4.0), in_plane_shape=(16, 16),
                            base_channels=4, depth=2, epochs=1, head_epochs=1, batch_size=4,
                            lr=1e-2)


def _brain(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    """A demo-like labelled volume, 24 x 28 x 14 at 2 mm: nested ellipsoids of WM (3, bright),
    GM (2) and CSF (1, dark) on a dark noisy background (0); written as <name>_t1.nii.gz
    with <name>_labels.nii.gz."""
    rng = np.random.default_rng(seed)
    shape = (24, 28, 14)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grids)) * (1 + 0.05 * seed)
    labels = np.select([r < 0.35, r < 0.6, r < 0.75], [3, 2, 1], 0).astype(np.uint8)
    image = np.choose(labels, [5.0, 30.0, 70.0, 110.0]) + rng.normal(0, 3, shape)
    folder.mkdir(parents=True, exist_ok=True)
    return (Path(write_nifti(folder / f"{name}_t1.nii.gz", image.astype(np.float32))),
            Path(write_nifti(folder / f"{name}_labels.nii.gz", labels)))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> tuple[list, list]:
    folder = tmp_path_factory.mktemp("brains")
    return [_brain(folder, "sub-1", 0)], [_brain(folder, "sub-2", 1)]


def _train(pairs, snapshot=None, **changes):
    torch.set_num_threads(1)
    return train_source_model(*pairs, replace(TINY, **changes), snapshot=snapshot)


def _same_weights(a, b) -> bool:
    return all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_contrast_augmentation_trains_and_is_recorded_in_the_provenance(pairs, tmp_path):
    from uda_core.models.bundle import load_model, save_bundle

    bundle, summary = _train(pairs, augment="contrast")
    assert np.isfinite(summary["val_dice"]) and np.isfinite(summary["val_dice_early_head"])
    augmentation = bundle.provenance["augmentation"]
    assert augmentation["preset"] == "contrast"
    settings = augmentation["settings"]
    assert settings["intensity"] is True and settings["max_rotation_deg"] == 10.0
    assert tuple(settings["pixel_mm"]) == (4.0, 4.0)       # the model grid's pixels
    assert bundle.provenance["config"]["augment"] == "contrast"
    saved = save_bundle(bundle, tmp_path / "robust.pt")
    loaded = load_model(saved)
    assert loaded.provenance["augmentation"]["preset"] == "contrast"
    assert loaded.provenance["augmentation"]["settings"]["gamma_log_std"] == 0.3


def test_augmented_training_is_deterministic_per_seed(pairs):
    first, first_summary = _train(pairs, augment="contrast", head_epochs=0)
    again, again_summary = _train(pairs, augment="contrast", head_epochs=0)
    assert _same_weights(first, again)
    assert first_summary["val_dice"] == again_summary["val_dice"]
    other, _ = _train(pairs, augment="contrast", head_epochs=0, seed=1)
    assert not _same_weights(first, other)


def test_each_preset_trains_differently_and_none_is_recorded_as_flips(pairs):
    bundles = {p: _train(pairs, augment=p, head_epochs=0)[0]
               for p in ("none", "geometric", "contrast")}
    assert not _same_weights(bundles["none"], bundles["geometric"])
    assert not _same_weights(bundles["geometric"], bundles["contrast"])
    none = bundles["none"].provenance["augmentation"]
    assert none["preset"] == "none" and none["settings"]["flip_probability"] == 0.5
    assert none["settings"]["max_rotation_deg"] == 0 and not none["settings"]["intensity"]


def test_validation_slices_are_never_augmented(pairs, monkeypatch):
    """Every batch the augmenter sees is a training batch: as many slices as training uses
    per epoch (the validation volume is not among them)."""
    from uda_core.runs import train_segmentation
    from uda_core.synth.augment import Augmenter

    seen: list[int] = []

    class Counting(Augmenter):
        def __call__(self, images, labels):
            seen.append(images.shape[0])
            return super().__call__(images, labels)

    monkeypatch.setattr(train_segmentation, "Augmenter", Counting)
    spied: dict[str, int] = {}
    real_indices = train_segmentation._training_indices

    def indices(slices, share, rng):
        chosen = real_indices(slices, share, rng)
        spied["train"] = spied.get("train", 0) + len(chosen)
        return chosen

    monkeypatch.setattr(train_segmentation, "_training_indices", indices)
    _train(pairs, augment="geometric", head_epochs=1)
    assert sum(seen) == spied["train"] > 0      # one epoch of each phase, training slices only


def test_an_unknown_preset_fails_before_any_work():
    missing = [(Path("no-such.nii.gz"), Path("no-such_labels.nii.gz"))]
    with pytest.raises(ValueError, match="unknown augmentation 'heavy'"):
        train_source_model(missing, missing, replace(TINY, augment="heavy"))
