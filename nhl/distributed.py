"""Multi-process training helpers for `torchrun` (DistributedDataParallel, gloo on CPU, nccl on GPU).

`torchrun --nproc_per_node 2 pipelines/train.py ...` starts one process per worker and sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `DistContext.from_env()` joins the
process group when WORLD_SIZE > 1 and is a no-op otherwise, so the same training loop serves
one process and many. Across nodes: `torchrun --nnodes N --node_rank R --nproc_per_node P
--rdzv_backend c10d --rdzv_endpoint HOST:PORT pipelines/train.py ...` on every node.

Global batches are what make a run comparable across process counts: `GlobalBatchSampler` draws
one seeded permutation per epoch, cuts it into global batches of `batch_size`, and hands each
process a contiguous share of every global batch. Gradients are averaged over processes (DDP),
so with equal shares the update equals the single-process update on the same global batch,
up to BatchNorm statistics (computed per process) and float rounding.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

_T = TypeVar("_T")


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device of this process; `world_size == 1` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str = "cpu") -> DistContext:
        """Join the process group torchrun describes in the environment (once per process)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return cls(
            rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
        )

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per process (by local rank) on CUDA; the CPU otherwise."""
        if requested.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return requested

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def all_reduce_mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The element-wise mean of each tensor over all processes (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    out = []
    for tensor in tensors:
        reduced = tensor.detach().clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        out.append(reduced / dist.get_world_size())
    return out


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows (in rank order); shares may differ in length."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(c.item())] for part, c in zip(parts, counts, strict=True)])


class GlobalBatchSampler(Sampler[list[int]]):
    """Yields this process's share of each global batch of one seeded permutation per epoch.

    With one process the shares are the whole global batches, so 1 and N processes see the same
    global batches in the same order. A final global batch too small to give every process at
    least two items (BatchNorm needs two in training mode) is dropped; so runs with different
    process counts see identical batches whenever the remainder `num_items % batch_size` is 0
    or at least twice the largest process count compared.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < world_size:
            raise ValueError(f"batch_size: {batch_size} is smaller than the {world_size} processes")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[np.ndarray]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_items, generator=generator).numpy()
        batches = [order[i : i + self.batch_size] for i in range(0, self.num_items, self.batch_size)]
        if batches and len(batches[-1]) < 2 * self.world_size and len(batches) > 1:
            batches = batches[:-1]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            yield np.array_split(batch, self.world_size)[self.rank].tolist()

    def __len__(self) -> int:
        return len(self._global_batches())


# ---------------------------------------------------------------- one decision for all ranks


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_object(value: _T, src: int = 0) -> _T:
    """Rank `src`'s (picklable) value on every process (identity without a process group)."""
    if not _group_active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def synchronise_buffers(module: torch.nn.Module) -> None:
    """Make every process hold the same buffers before evaluating or saving the model.

    Floating buffers (BatchNorm running mean / variance) are averaged over processes: DDP
    broadcasts rank 0's buffers before each forward, but each rank's last forward of an epoch
    still updates its own copy, so the ranks end the epoch with different statistics (val mAP
    0.9486 vs 0.9445 in issue 22). Other buffers (counters) take rank 0's value.
    """
    if not _group_active():
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer.data, op=dist.ReduceOp.SUM)
            buffer.data /= dist.get_world_size()
        else:
            dist.broadcast(buffer.data, src=0)
