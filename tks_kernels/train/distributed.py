"""DDP helpers of ``tks-train``: process group from torchrun's environment, and the few
collectives the command needs (broadcast of a Python object, sums, gathers)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    """This process's place in the job (a single process when not under torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def init_distributed(device_arg: Optional[str]) -> tuple:
    """torchrun sets RANK, WORLD_SIZE, LOCAL_RANK: NCCL on GPUs, gloo on CPUs.

    Returns ``(Dist, torch.device)``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def shutdown() -> None:
    """Destroys the process group the command created under torchrun, if any."""
    if dist.is_available() and dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.on:
        dist.barrier()


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.on:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: Sequence[float], d: Dist, device: torch.device) -> List[float]:
    """Element-wise sum over the ranks (fp64, so integer counts stay exact)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if d.on:
        dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any, d: Dist) -> List[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without DDP)."""
    if not d.on:
        return [obj]
    out: List[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def sync_buffers_from_rank0(model: nn.Module, d: Dist) -> None:
    """DDP syncs buffers at the start of a forward, so each rank ends an epoch with its own
    BN running statistics: take rank 0's, as the next forward would."""
    if d.on:
        for b in model.buffers():
            dist.broadcast(b, src=0)
