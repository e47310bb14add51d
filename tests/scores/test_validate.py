import numpy as np
import pytest

from uda_core.scores.segmentation import dice, hd95_assd, segmentation_scores


def test_dice_hand_computed():
    pred = np.array([[1, 1, 0, 0]])
    ref = np.array([[1, 0, 0, 0]])
    assert dice(pred, ref, 1) == pytest.approx(2 * 1 / 3)
    assert dice(pred, ref, 2) == 1.0  # absent from both


def test_surface_distances_of_shifted_cube_in_mm():
    ref = np.zeros((20, 20, 20), np.int16)
    ref[5:10, 5:10, 5:10] = 1
    pred = np.roll(ref, 2, axis=0)  # shifted by 2 voxels along axis 0
    hd, assd = hd95_assd(pred, ref, 1, spacing=(1.5, 1.0, 1.0))
    assert hd == pytest.approx(3.0)  # 2 voxels x 1.5 mm
    assert 0 < assd <= 3.0
    hd0, assd0 = hd95_assd(ref, ref, 1, spacing=(1, 1, 1))
    assert hd0 == 0 and assd0 == 0


def test_missing_class_gives_nan_distance_and_zero_dice():
    ref = np.zeros((8, 8, 8), np.int16)
    ref[2:5, 2:5, 2:5] = 1
    pred = np.zeros_like(ref)
    scores = segmentation_scores(pred, ref, ["background", "tissue"], (1, 1, 1))
    assert scores["per_class"]["tissue"]["dice"] == 0.0
    assert np.isnan(scores["per_class"]["tissue"]["hd95_mm"])
