"""A CPU stand-in for ColossalAI's LowLevelZeroPlugin (stage 2, bf16), which refuses to run without CUDA: it holds
the model as that plugin does (cast to bf16, float inputs converted in the wrapper's forward) and steps fp32 master
weights behind the same map API (one rank: a shard is the whole flat parameter), so the training loop runs its
zero2 path (probe, validation, sampling, EMA, checkpoints, resume) on a CPU."""

from __future__ import annotations

import torch
import torch.distributed as dist
from colossalai.booster.plugin import TorchDDPPlugin
from colossalai.booster.plugin.torch_ddp_plugin import TorchDDPCheckpointIO
from colossalai.interface import ModelWrapper, OptimizerWrapper


class Bf16Model(ModelWrapper):
    def forward(self, *args, **kwargs):
        cast = [a.to(torch.bfloat16) if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        return self.module(*cast, **kwargs)


class MasterWeights(OptimizerWrapper):
    """fp32 master weights for the bf16 working weights: gradients go to them, AdamW steps them (after clipping to
    max_norm), the working weights take their values back in bf16."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_norm: float):
        self.max_norm = max_norm
        self.pairs = []
        for group in optimizer.param_groups:
            masters = []
            for working in group["params"]:
                master = torch.nn.Parameter(working.detach().float().clone())
                self.pairs.append((working, master))
                masters.append(master)
            group["params"] = masters
        super().__init__(optimizer)
        self.param_to_pg = {w: dist.group.WORLD for w, _ in self.pairs}
        self._map = {id(w): m.detach().view(-1) for w, m in self.pairs}  # views: they follow every step

    def backward(self, loss, *args, **kwargs):
        loss.backward(*args, **kwargs)

    def step(self, *args, **kwargs):
        for working, master in self.pairs:
            master.grad = None if working.grad is None else working.grad.float()
        torch.nn.utils.clip_grad_norm_([m for _, m in self.pairs], self.max_norm)
        self.optim.step(*args, **kwargs)
        with torch.no_grad():
            for working, master in self.pairs:
                working.copy_(master.to(working.dtype))

    def zero_grad(self, *args, **kwargs):
        for working, master in self.pairs:
            working.grad = master.grad = None

    def get_working_to_master_map(self):
        return self._map

    def get_param_padding_size(self, param) -> int:
        return 0

    def load_state_dict(self, state):
        self.optim.load_state_dict(state)

    def masters_from_working(self):
        """After the booster loaded the model: the masters take the loaded (bf16) values, as LowLevelZero's do."""
        with torch.no_grad():
            for working, master in self.pairs:
                master.copy_(working.float())


class Bf16Zero2Plugin(TorchDDPPlugin):
    def __init__(self, max_norm: float):
        super().__init__()
        self.max_norm = max_norm
        self.optimizer: MasterWeights | None = None

    def configure(self, model, optimizer=None, criterion=None, dataloader=None, lr_scheduler=None):
        self.optimizer = MasterWeights(optimizer, self.max_norm)
        return Bf16Model(model.to(torch.bfloat16)), self.optimizer, criterion, dataloader, lr_scheduler

    def get_checkpoint_io(self):
        plugin = self

        class IO(TorchDDPCheckpointIO):
            def load_unsharded_model(self, *args, **kwargs):
                super().load_unsharded_model(*args, **kwargs)
                plugin.optimizer.masters_from_working()

        return IO()
