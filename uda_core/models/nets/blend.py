"""Two segmentation networks of one input, their class probabilities mixed (a "blend").

    p(x) = (1 - w) * softmax(first(x)) + w * softmax(second(x))

``first`` is the user's network, ``second`` a guide that takes the same input and predicts
the same classes (typically the contrast-robust ``demo:brain-t1-robust``); the mixing weight
w (0..1) is a buffer, so it travels in the state dict, and w = 0 is ``first`` alone. The
network returns log p, which every consumer reads as logits (softmax(log p) = p).

A bundle of it has architecture ``"blend"`` and ``arch_kwargs = {"members": [spec, spec]}``,
each spec ``{"architecture": name, "arch_kwargs": {...}}`` of a known, non-blend
segmentation architecture: it is rebuilt from those names like any bundle, without running
code from the file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

#: Probabilities are clamped to this before the log (a class no member predicts at all).
MIN_PROBABILITY = 1e-12

#: Architectures a blend may not hold (registration networks predict displacements).
NOT_MEMBERS = ("blend", "discrete_regnet")


def _member(spec: Any) -> nn.Module:
    from uda_core.models.nets import architecture_class, is_known_architecture

    if not isinstance(spec, dict) or set(spec) != {"architecture", "arch_kwargs"}:
        raise ValueError("each blend member is {'architecture': ..., 'arch_kwargs': {...}}")
    name = spec["architecture"]
    if not is_known_architecture(name) or name in NOT_MEMBERS:
        raise ValueError(f"a blend member cannot be of architecture {name!r}")
    return architecture_class(name)(**spec["arch_kwargs"])


class BlendNet(nn.Module):
    """(B, 1, X, Y) -> (B, C, X, Y) log-probabilities of the two members' mixture (module doc).

    members: the two member specs; the buffer ``weight`` is w, the second member's share
    (0..1; 0 when built, then :meth:`set_weight` or the bundle's state dict)."""

    weight: Tensor   # a 0-d buffer

    def __init__(self, members: list[dict]) -> None:
        super().__init__()
        if not isinstance(members, list) or len(members) != 2:
            raise ValueError("a blend holds exactly two member networks")
        self._specs = [dict(spec) for spec in members]
        self.first = _member(members[0])
        self.second = _member(members[1])
        self.register_buffer("weight", torch.tensor(0.0))   # w; set_weight, or the state dict

    @classmethod
    def of(cls, first: nn.Module, second: nn.Module, first_spec: dict, second_spec: dict,
           weight: float = 0.0) -> BlendNet:
        """A blend of two built networks (their weights copied in), on first's device."""
        with torch.device("meta"):
            blend = cls([first_spec, second_spec])
        blend.first, blend.second = first, second
        blend.weight = torch.tensor(0.0, device=next(first.parameters()).device)
        blend.set_weight(weight)
        return blend

    def set_weight(self, weight: float) -> None:
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"the blend weight must be in 0..1, got {weight}")
        self.weight.fill_(float(weight))

    def arch_kwargs(self) -> dict[str, Any]:
        return {"members": [dict(spec) for spec in self._specs]}

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float()
        probs = torch.softmax(self.first(x).float(), dim=1) * (1.0 - w)
        if float(w) > 0.0:
            probs = probs + torch.softmax(self.second(x).float(), dim=1) * w
        return torch.log(probs.clamp_min(MIN_PROBABILITY))


def unblended(network: nn.Module) -> nn.Module:
    """``network`` itself, or for a blend of weight 0 its first member (what it computes)."""
    if isinstance(network, BlendNet) and float(network.weight) == 0.0:
        return network.first
    return network
