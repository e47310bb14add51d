"""intensity_fit: the share of the brain's intensity variance the predicted classes explain."""

import math

import pytest
import torch

from uda_core.scores.label_free import HIGHER_IS_BETTER, intensity_fit


def test_hand_computed_value_on_one_slice():
    # brain pixels 1, 3 (class 1) and 5, 9 (class 2); background ignored
    images = torch.tensor([[[[1.0, 3.0, 5.0, 9.0, 100.0]]]])      # (1, 1, 1, 5)
    labels = torch.tensor([[[1, 1, 2, 2, 0]]])                      # (1, 1, 5)
    # total: mean 4.5 -> 12.25 + 2.25 + 0.25 + 20.25 = 35; within: (1 + 1) + (4 + 4) = 10
    assert intensity_fit(images, labels, min_pixels=1) == pytest.approx(1 - 10 / 35)


def test_class_means_are_per_slice_so_a_brightness_offset_between_slices_does_not_count():
    one = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
    images = torch.stack([one, one + 10.0])[:, None]                # (2, 1, 1, 4)
    labels = torch.tensor([[[1, 1, 2, 2]], [[1, 1, 2, 2]]])
    assert intensity_fit(images, labels, min_pixels=1) == pytest.approx(1.0)


def test_a_worse_partition_explains_less():
    images = torch.tensor([[[[1.0, 2.0, 8.0, 9.0]]]])
    right = torch.tensor([[[1, 1, 2, 2]]])
    wrong = torch.tensor([[[1, 2, 1, 2]]])
    assert intensity_fit(images, right, 1) > intensity_fit(images, wrong, 1)
    assert HIGHER_IS_BETTER["intensity_fit"] is True


def test_small_or_empty_brains_are_left_out():
    images = torch.arange(8.0).reshape(2, 1, 1, 4)
    labels = torch.tensor([[[1, 2, 0, 0]], [[0, 0, 0, 0]]])
    assert math.isnan(intensity_fit(images, labels, min_pixels=3))
    assert intensity_fit(images, labels, min_pixels=2) == pytest.approx(1.0)
    assert math.isnan(intensity_fit(torch.ones(1, 1, 2, 2), torch.ones(1, 2, 2, dtype=torch.long),
                                    min_pixels=1))    # a constant brain


def test_3d_patches_are_items_too():
    images = torch.tensor([1.0, 3.0, 5.0, 9.0]).reshape(1, 1, 1, 2, 2)
    labels = torch.tensor([1, 1, 2, 2]).reshape(1, 1, 2, 2)
    assert intensity_fit(images, labels, min_pixels=1) == pytest.approx(1 - 10 / 35)
