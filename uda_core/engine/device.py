"""Choosing the torch device: 'auto' prefers CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from uda_core.errors import UdaError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a user's choice; a clear error if it is not available here."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UdaError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                           "(use --device cpu or auto)")
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UdaError("--device mps was asked for, but Apple MPS is not available here")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise UdaError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
