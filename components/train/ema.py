"""The EMA of the weights, in fp32, from the weights the optimizer steps.

With DDP those are the model's own fp32 parameters. ZeRO-2 (LowLevelZero, bf16) holds the model in bf16 and steps
fp32 master weights, each rank a flat shard of every parameter: an EMA of the bf16 working weights would average
their rounding. Here each rank keeps the EMA of its own master shards instead (1/world of the fp32 weights, no
communication per step), and `whole()` gathers them into the full fp32 model when one is needed (sample videos,
checkpoints, the export).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from components.train.build import update_ema
from model.stdit import STDiT


class EMA:
    def __init__(self, model: STDiT, inner: STDiT, optimizer, plugin: str):
        """`model`: the fp32 EMA model (a copy of the initial weights); `inner`: the trained model; `optimizer` and
        `plugin` as boosted (zero2: a LowLevelZero optimizer with its master-weight map)."""
        self.model, self._inner, self._optimizer = model, inner, optimizer
        masters = optimizer.get_working_to_master_map() if plugin == "zero2" else {}
        # (name, working parameter, its fp32 master shard, the EMA of that shard)
        self._shards = [
            (name, p, masters[id(p)], masters[id(p)].detach().float().clone())
            for name, p in inner.named_parameters()
            if id(p) in masters
        ]

    def update(self, decay: float) -> None:
        """ema = decay * ema + (1 - decay) * weights, after an optimizer step."""
        if not self._shards:
            update_ema(self.model, self._inner, decay)
            return
        with torch.no_grad():
            for _, _, master, shard in self._shards:
                shard.lerp_(master.float(), 1 - decay)

    def whole(self) -> STDiT:
        """The fp32 EMA model. With shards, every rank must call this: they are gathered from all ranks."""
        if self._shards:
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, p, _, shard in self._shards:
                    group = self._optimizer.param_to_pg[p]
                    parts = [torch.empty_like(shard) for _ in range(dist.get_world_size(group))]
                    dist.all_gather(parts, shard, group=group)
                    whole = torch.cat(parts)[: p.numel()].view(p.shape)
                    params[name].copy_(whole.to(params[name].device))
        return self.model

    def loaded(self) -> None:
        """After `self.model` was loaded from a checkpoint: each rank takes its shards from it again."""
        if not self._shards:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, p, _, shard in self._shards:
                group = self._optimizer.param_to_pg[p]
                flat = params[name].detach().reshape(-1).float()
                flat = torch.nn.functional.pad(flat, [0, self._optimizer.get_param_padding_size(p)])
                piece = flat.chunk(dist.get_world_size(group))[dist.get_rank(group)]
                shard.copy_(piece.to(shard.device))
