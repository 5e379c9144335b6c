"""ZeRO-2's flat shards (ColossalAI LowLevelZero): each rank holds, for every parameter, one slice of the flattened
parameter padded to a multiple of the group size. The fp32 master weights, the optimizer's moments and the EMA
live in that form; checkpoints hold them whole, so that any number of ranks can load them."""

from __future__ import annotations

import torch
import torch.distributed as dist


def gather_whole(shard: torch.Tensor, param: torch.Tensor, optimizer) -> torch.Tensor:
    """The whole tensor (shaped as `param`) from every rank's `shard` of it. Collective over the param's group."""
    group = optimizer.param_to_pg[param]
    parts = [torch.empty_like(shard) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, shard.contiguous(), group=group)
    return torch.cat(parts)[: param.numel()].view(param.shape)


def local_shard(whole: torch.Tensor, param: torch.Tensor, optimizer) -> torch.Tensor:
    """This rank's shard of `whole` (shaped as `param`), as the optimizer pads and splits it."""
    group = optimizer.param_to_pg[param]
    flat = torch.nn.functional.pad(whole.reshape(-1), [0, optimizer.get_param_padding_size(param)])
    return flat.chunk(dist.get_world_size(group))[dist.get_rank(group)]


def master_shards(model: torch.nn.Module, optimizer) -> list[tuple[str, torch.nn.Parameter, torch.Tensor]]:
    """(name, working parameter, this rank's fp32 master shard) of every parameter the optimizer steps."""
    masters = optimizer.get_working_to_master_map()
    return [(name, p, masters[id(p)]) for name, p in model.named_parameters() if id(p) in masters]


def whole_masters(model: torch.nn.Module, optimizer) -> dict[str, torch.Tensor]:
    """{parameter name: the whole fp32 master weight}, on the CPU. Collective: every rank calls it."""
    return {name: gather_whole(m, p, optimizer).float().cpu() for name, p, m in master_shards(model, optimizer)}


def load_masters(model: torch.nn.Module, optimizer, whole: dict[str, torch.Tensor]) -> list[str]:
    """Copy this rank's shard of each whole master weight into the optimizer's masters; the names it had none for."""
    missing = []
    with torch.no_grad():
        for name, p, master in master_shards(model, optimizer):
            if name not in whole:
                missing.append(name)
                continue
            master.copy_(local_shard(whole[name].to(master.device), p, optimizer).to(master.dtype))
    return missing
