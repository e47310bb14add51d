"""Data-parallel adaptation across processes (torchrun): who this process is, and the few
collective operations a run needs.

Under ``torchrun --nproc-per-node N -m uda_core.cli adapt ...`` every process (rank) runs the
same run with the same seed: it draws the same global batch of target slices and keeps its
share (rank, rank + N, ...: what DistributedSampler does with a shared seed), its gradients
are averaged over the ranks before each optimiser step (:func:`average_gradients`, the
all-reduce of DistributedDataParallel, done once per update in
``AdaptationMethod.update`` so that methods with several forwards or sub-network calls need
no wrapper), BatchNorm layers normalise with the statistics of the global batch
(:class:`GlobalBatchNorm2d` and ``3d``, SyncBatchNorm's job, which also works on the CPU with
gloo), label-free scores and losses are averaged over the ranks (:func:`average_numbers`), and only
rank 0 writes files. With one process every function here is the identity.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from uda_core.errors import UdaError


def _active() -> bool:
    return bool(torch.distributed.is_available() and torch.distributed.is_initialized())


def world_size() -> int:
    """The number of processes in the run (1 without torchrun)."""
    return torch.distributed.get_world_size() if _active() else 1


def rank() -> int:
    """This process's number, 0..world_size()-1 (0 without torchrun)."""
    return torch.distributed.get_rank() if _active() else 0


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_environment(device: str = "auto") -> str:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, ...): NCCL when this process runs on a CUDA GPU, else gloo. Returns the
    device this rank uses ("cuda:<LOCAL_RANK>" or "cpu")."""
    if not launched_by_torchrun():
        raise UdaError("--ddp runs under torchrun: torchrun --nproc-per-node N -m "
                       "uda_core.cli adapt ...")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        chosen = f"cuda:{local}"
    else:
        chosen = "cpu"
    if not _active():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return chosen


def shard_of(indices: np.ndarray) -> np.ndarray:
    """This rank's share of a global batch of indices: every world_size()-th from rank()."""
    size = world_size()
    if size == 1:
        return indices
    if len(indices) % size:
        raise UdaError(f"the batch size ({len(indices)}) must be a multiple of the number of "
                       f"processes ({size}); each takes an equal share")
    return indices[rank()::size]


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over the ranks (in place)."""
    size = world_size()
    if size == 1:
        return
    for p in parameters:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= size


def average_numbers(values: dict[str, float]) -> dict[str, float]:
    """Each number's mean over the ranks (every rank passes the same names)."""
    if world_size() == 1 or not values:
        return values
    names = sorted(values)
    tensor = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    tensor /= world_size()
    return dict(zip(names, tensor.tolist(), strict=True))


def average_array(values: np.ndarray) -> np.ndarray:
    """An array's mean over the ranks (same shape on every rank)."""
    if world_size() == 1:
        return values
    tensor = torch.as_tensor(np.asarray(values, dtype=np.float64)).clone()
    torch.distributed.all_reduce(tensor)
    return (tensor / world_size()).numpy()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(sum) with its gradient: the sum of the incoming gradients over the ranks
    (each rank's loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx: object, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        torch.distributed.all_reduce(total)
        return total


def _global_batchnorm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """The forward of GlobalBatchNorm2d / 3d: batch statistics over all ranks (see there)."""
    if not (self.training and world_size() > 1):
        return nn.modules.batchnorm._BatchNorm.forward(self, x)
    given = x
    x = x.float()   # statistics in float32, also under bfloat16 autocast
    channels = x.shape[1]
    axes = (0, *range(2, x.ndim))
    shape = (1, channels, *(1,) * (x.ndim - 2))
    count = torch.tensor([x.numel() / channels], dtype=x.dtype, device=x.device)
    sums = torch.cat([x.sum(dim=axes), (x * x).sum(dim=axes), count])
    stats = _SumOverRanks.apply(sums)
    n = stats[-1]
    mean = stats[:channels] / n
    var = (stats[channels:2 * channels] / n - mean * mean).clamp_min(0)
    running_mean, running_var, tracked = (self.running_mean, self.running_var,
                                          self.num_batches_tracked)
    if self.track_running_stats and running_mean is not None and running_var is not None \
            and tracked is not None:
        with torch.no_grad():
            tracked.add_(1)
            factor = (1.0 / float(tracked) if self.momentum is None else self.momentum)
            unbiased = var * n / (n - 1).clamp_min(1)
            running_mean.mul_(1 - factor).add_(factor * mean.detach())
            running_var.mul_(1 - factor).add_(factor * unbiased.detach())
    y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
    if self.affine:
        y = y * self.weight.view(shape) + self.bias.view(shape)
    return y.to(given.dtype)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the batch over all ranks
    (the sum and sum of squares per channel are all-reduced, differentiably), so N processes
    with B/N slices each normalise as one process with B. Same parameters and buffers as
    BatchNorm2d (state dicts are interchangeable); in eval mode, or with one process, it is
    BatchNorm2d."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _global_batchnorm(self, input)


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """GlobalBatchNorm2d for 3D networks' patches (B, C, D, H, W)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _global_batchnorm(self, input)


_GLOBAL: dict[type[nn.Module], type[nn.modules.batchnorm._BatchNorm]] = {
    nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm3d: GlobalBatchNorm3d}


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d / 3d replaced (in place) by a GlobalBatchNorm2d / 3d
    holding the same parameters and statistics; unchanged with one process."""
    if world_size() == 1:
        return module
    for name, child in list(module.named_children()):
        if type(child) in _GLOBAL and isinstance(child, nn.modules.batchnorm._BatchNorm):
            synced = _GLOBAL[type(child)](child.num_features, child.eps, child.momentum,
                                       child.affine, child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            synced.to(next(iter(child.state_dict().values())).device)
            if child.affine:
                synced.weight.requires_grad_(child.weight.requires_grad)
                synced.bias.requires_grad_(child.bias.requires_grad)
            setattr(module, name, synced)
        else:
            sync_batchnorm(child)
    return module
