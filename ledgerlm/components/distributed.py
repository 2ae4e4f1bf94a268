"""Process-group setup and model wrapping for `torchrun --nproc_per_node N` (DDP, or FSDP2 via `parallel: fsdp`).

Global-batch semantics: every rank reads the same global batch from the loader and trains on its own slice of
micro-batches, so loader state is identical on all ranks and N processes see exactly the tokens 1 process sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ledgerlm.device import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistInfo(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.startswith("cuda"):
        torch.cuda.set_device(local)
        dev = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.startswith("cuda") else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def wrap_model(model: nn.Module, parallel: str, info: DistInfo) -> nn.Module:
    if not info.enabled or parallel == "none":
        return model
    if parallel == "ddp":
        ids = [info.local_rank] if info.device.startswith("cuda") else None
        return DDP(model, device_ids=ids)
    if parallel == "fsdp":
        try:
            from torch.distributed.fsdp import fully_shard
        except ImportError:  # torch < 2.6
            from torch.distributed._composable.fsdp import fully_shard
        for layer in model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    raise ValueError(f"parallel must be none, ddp or fsdp, got {parallel!r}")


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def full_state_dicts(model: nn.Module, optimizer, info: DistInfo, parallel: str):
    """(model_state, optim_state) as full, CPU tensors on every rank (FSDP gathers shards)."""
    if info.enabled and parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)
    return unwrap(model).state_dict(), optimizer.state_dict()


def load_full_state_dicts(model: nn.Module, optimizer, model_state, optim_state, info: DistInfo, parallel: str):
    if info.enabled and parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_model_state_dict(model, model_state, options=opts)
        set_optimizer_state_dict(model, optimizer, optim_state, options=opts)
        return
    m = unwrap(model)
    missing, unexpected = m.load_state_dict(model_state, strict=False)
    bad = [k for k in missing if k != "lm_head.weight"] + list(unexpected)
    if bad:
        raise ValueError(f"checkpoint does not match the model: {bad[:5]}")
    optimizer.load_state_dict(optim_state)
