"""The loss levers of source training (`SourceTrainingConfig.class_weights`,
`boundary_weight`) and the per-epoch snapshots of `train_source_model`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.runs.test_train_source import _train, pairs  # noqa: F401  (a fixture)
from uda_core.runs.train_segmentation import _weighted_cross_entropy, brain_edge


def test_brain_edge_marks_both_sides_of_the_tissue_border():
    labels = torch.zeros(1, 12, 12, dtype=torch.long)
    labels[0, 3:9, 3:9] = 2
    edge = brain_edge(labels, 1)[0]
    assert edge[2, 2] and edge[3, 3] and edge[8, 8] and edge[9, 9]   # outside and inside
    assert not edge[5, 5] and not edge[0, 0] and not edge[1, 6]      # deep inside / far out
    assert edge.sum() == 8 * 8 - 4 * 4          # rows and columns 2-9 less 4-7
    assert not brain_edge(torch.zeros(2, 5, 5, dtype=torch.long), 2).any()


def test_without_weights_the_loss_is_plain_cross_entropy_and_weights_change_it():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 12, 12)
    labels = torch.randint(0, 4, (2, 12, 12))
    plain = F.cross_entropy(logits, labels)
    assert torch.allclose(_weighted_cross_entropy(logits, labels, None, 0.0, 2), plain)
    # the weighted mean of torch's weight= is kept when the boundary term is on
    ones = torch.ones(4)
    weights = torch.tensor([1.0, 2.0, 1.0, 1.0])
    assert torch.allclose(
        _weighted_cross_entropy(logits, labels, weights, 1e-12, 2),
        F.cross_entropy(logits, labels, weight=weights), atol=1e-6)
    assert not torch.allclose(_weighted_cross_entropy(logits, labels, ones, 2.0, 2), plain)


def test_snapshots_come_after_every_network_epoch_and_load(pairs, tmp_path):  # noqa: F811
    from uda_core.models.bundle import load_model, save_bundle

    seen = []

    def snapshot(epoch, bundle):
        seen.append((epoch, save_bundle(bundle, tmp_path / f"epoch{epoch}.pt")))

    final, _ = _train(pairs, epochs=2, head_epochs=1, class_weights=(1.0, 2.0, 1.0, 1.0),
                      boundary_weight=2.0, snapshot=snapshot)
    assert [e for e, _ in seen] == [1, 2]
    last = load_model(seen[-1][1])
    assert last.provenance["summary"] == {"snapshot_epoch": 2}
    assert last.provenance["config"]["boundary_weight"] == 2.0
    assert tuple(final.provenance["config"]["class_weights"]) == (1.0, 2.0, 1.0, 1.0)


def test_class_weights_need_one_positive_number_per_class(pairs):  # noqa: F811
    with pytest.raises(ValueError, match="4 positive numbers"):
        _train(pairs, class_weights=(1.0, 2.0))
