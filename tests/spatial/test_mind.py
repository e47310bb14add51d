"""MIND-SSC descriptors (uda_core.spatial.mind)."""

from __future__ import annotations

import pytest
import torch

from uda_core.spatial.mind import MIND_CHANNELS, mind_ssc


def test_mind_is_invariant_to_linear_intensity_maps_and_sees_structure():
    torch.manual_seed(0)
    image = torch.rand(2, 1, 20, 24, dtype=torch.float64)
    code = mind_ssc(image)
    assert code.shape == (2, MIND_CHANNELS, 20, 24)
    assert float(code.min()) > 0 and float(code.max()) <= 1
    torch.testing.assert_close(mind_ssc(3.0 * image + 2.0), code)
    torch.testing.assert_close(mind_ssc(1.0 - image), code)     # an inverted contrast
    flat = mind_ssc(torch.ones(1, 1, 8, 8))
    torch.testing.assert_close(flat, torch.ones_like(flat))
    edge = torch.zeros(1, 1, 10, 10)
    edge[..., 5:] = 1.0                                         # a vertical edge
    code = mind_ssc(edge, sigma_px=0)
    assert float(code[0, :, 5, 0].min()) == 1.0                 # far from the edge: uniform
    assert float(code[0, :, 5, 5].min()) < 0.5                  # at the edge: structure


def test_mind_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        mind_ssc(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="dilation"):
        mind_ssc(torch.zeros(1, 1, 8, 8), dilation=0)
