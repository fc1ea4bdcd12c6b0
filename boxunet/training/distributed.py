"""Data-parallel training with torch.distributed: NCCL on CUDA, gloo on CPU.

``boxunet_train --num-gpus N`` spawns N processes on localhost; ``torchrun`` works too (it sets RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT, which ``init_from_environment`` reads). Only rank 0 writes files.
"""
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from boxunet.errors import BoxunetError


@dataclass(frozen=True)
class ProcessGroupInfo:
    """Where this process stands in the group: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1  # the processes of the group on this machine (they share its cores)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def free_port() -> int:
    """A free TCP port on localhost for the rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def init_process_group(rank: int, world_size: int, device_type: str, port: int) -> ProcessGroupInfo:
    """Join a process group of ``world_size`` processes on localhost."""
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    return ProcessGroupInfo(rank, world_size, _device_for(device_type, rank), world_size)


def init_from_environment(device_type: str) -> ProcessGroupInfo | None:
    """Join the group described by torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; on one machine or several), or return None when not under
    torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method="env://")
    return ProcessGroupInfo(rank, world_size, _device_for(device_type, local_rank), local_world_size)


def _device_for(device_type: str, local_rank: int) -> torch.device:
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(device_type)


def rank_share_of_batch(global_batch_size: int, oversample: float, rank: int, world_size: int) -> list[bool]:
    """This rank's samples of the global batch, as forced-foreground flags (one per sample).

    The global batch is split into contiguous shares (the first ranks take the remainder), and the
    oversampling rule (the last round(B * p) samples are forced foreground) is applied to the global
    batch, so data-parallel training oversamples exactly like a single process.
    """
    if global_batch_size < world_size:
        raise BoxunetError(f"the plans' batch size {global_batch_size} is smaller than the {world_size} processes; "
                           "use fewer GPUs or a plans file with a larger batch size")
    flags = [index >= round(global_batch_size * (1 - oversample)) for index in range(global_batch_size)]
    share, remainder = divmod(global_batch_size, world_size)
    start = rank * share + min(rank, remainder)
    return flags[start:start + share + (1 if rank < remainder else 0)]


def all_reduce_sum(tensor: torch.Tensor, info: ProcessGroupInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (no-op when not distributed)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(mapping: dict, info: ProcessGroupInfo) -> dict:
    """The union of every rank's ``mapping`` (picklable values; the mapping itself when not distributed).
    Replaces the barrier it implies."""
    if not info.distributed:
        return mapping
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, mapping)
    return {key: value for part in gathered for key, value in part.items()}


def barrier(info: ProcessGroupInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.distributed:
        dist.barrier()


def shutdown(info: ProcessGroupInfo) -> None:
    """Leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def training_network(network: nn.Module, group: ProcessGroupInfo, compile_network: bool) -> nn.Module:
    """``network`` as a training step calls it: compiled when asked (``torch.compile``, any device; on a CPU it
    needs a C++ compiler), and wrapped for data-parallel training in a group of several processes (synchronized
    batch norm on CUDA)."""
    device = group.device
    if compile_network:
        network = torch.compile(network)
    if group.distributed:
        if device.type == "cuda":
            network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        network = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    return network
