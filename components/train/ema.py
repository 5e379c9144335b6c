"""The EMA of the weights, in fp32, from the weights the optimizer steps.

With DDP those are the model's own fp32 parameters. ZeRO-2 (LowLevelZero, bf16) holds the model in bf16 and steps
fp32 master weights, each rank a flat shard of every parameter: an EMA of the bf16 working weights would average
their rounding. Here each rank keeps the EMA of its own master shards instead (1/world of the fp32 weights, no
communication per step), and `whole()` gathers them into the full fp32 model when one is needed (sample videos,
checkpoints, the export).
"""

from __future__ import annotations

import torch

from components.train.build import update_ema
from components.train.shards import gather_whole, local_shard, master_shards
from model.networks.stdit import STDiT


class EMA:
    def __init__(self, model: STDiT, inner: STDiT, optimizer, plugin: str):
        """`model`: the fp32 EMA model (a copy of the initial weights); `inner`: the trained model; `optimizer` and
        `plugin` as boosted (zero2: a LowLevelZero optimizer with its master-weight map)."""
        self.model, self._inner, self._optimizer = model, inner, optimizer
        shards = master_shards(inner, optimizer) if plugin == "zero2" else []
        # (name, working parameter, its fp32 master shard, the EMA of that shard)
        self._shards = [(name, p, m, m.detach().float().clone()) for name, p, m in shards]

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
                    params[name].copy_(gather_whole(shard, p, self._optimizer).to(params[name].device))
        return self.model

    def loaded(self) -> None:
        """After `self.model` was loaded from a checkpoint: each rank takes its shards from it again."""
        if not self._shards:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, p, _, shard in self._shards:
                shard.copy_(local_shard(params[name].detach().float(), p, self._optimizer).to(shard.device))
