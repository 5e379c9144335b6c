"""Processes and the ColossalAI Booster: the process group, the plugin, the boosted model with AdamW and its
warmup schedule, and the collective and gradient helpers the training step needs."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from components.train.config import TrainConfig
from model.networks.stdit import STDiT

# what torchrun gives each process; a lone process started without it gets them from `launched`, for its run only
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def launched(seed: int) -> Iterator[tuple[int, int, str]]:
    """The process group through ColossalAI for the block: (rank, world size, device); then the group destroyed.
    Without torchrun's environment (one local process) the block runs with a free loopback port as its own, and
    the variables are gone afterwards: a later run in this process, or a process it starts, picks a port afresh
    instead of one another socket may hold by then."""
    own = "RANK" not in os.environ
    if own:
        os.environ.update(_lone_process_env())
    try:
        yield launch(seed)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if own:
            for key in TORCHRUN_ENV:
                os.environ.pop(key, None)


def launch(seed: int) -> tuple[int, int, str]:
    """Initialise the process group through ColossalAI from torchrun's environment; (rank, world size, device).
    The group stays until destroyed: `launched` scopes it (and the environment it makes) to a block."""
    import colossalai

    if "RANK" not in os.environ:
        raise RuntimeError("no torchrun environment (RANK, MASTER_PORT, ...): start the process with torchrun, or "
                           "use components.train.launch.launched, which gives one local process its own")  # fmt: skip
    cuda = torch.cuda.is_available()
    colossalai.launch_from_torch(backend="nccl" if cuda else "gloo", seed=seed, verbose=False)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def _lone_process_env() -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    values = ("0", "1", "0", "1", "127.0.0.1", str(port))
    return dict(zip(TORCHRUN_ENV, values, strict=True))


def plugin_name(name: str) -> str:
    """The plugin `plugin=name` means here: auto is zero2 on CUDA, ddp on the CPU."""
    if name == "auto":
        return "zero2" if torch.cuda.is_available() else "ddp"
    return name


def make_plugin(name: str, grad_clip: float):
    """(plugin, resolved name): LowLevelZero stage 2 in bf16 for zero2, torch DDP for ddp; auto picks by CUDA."""
    from colossalai.booster.plugin import TorchDDPPlugin

    name = plugin_name(name)
    if name == "zero2":
        if not torch.cuda.is_available():
            raise ValueError("plugin zero2 (LowLevelZero) needs CUDA; use plugin=ddp on CPU")
        return zero2_plugin(grad_clip), name
    # images leave the temporal branch unused, and batches without dropped captions the null caption
    return TorchDDPPlugin(find_unused_parameters=True), name


def zero2_plugin(grad_clip: float):
    """ColossalAI's LowLevelZero, stage 2 (gradients and optimizer states sharded over the data-parallel ranks),
    bf16 working weights with fp32 masters; it clips to `grad_clip` inside its step."""
    from colossalai.booster.plugin import LowLevelZeroPlugin

    return LowLevelZeroPlugin(stage=2, precision="bf16", max_norm=grad_clip)


@dataclass
class Boosted:
    """The model, optimizer and schedule as the booster wrapped them, and the booster that saves and loads them."""

    booster: Any
    model: Any  # the plugin's wrapper: backward, clipping and checkpoints go through it
    inner: STDiT  # the model itself, for EMA, validation and metrics
    optimizer: Any
    scheduler: Any
    plugin: str  # the resolved plugin name: ddp or zero2


def boost(model: STDiT, cfg: TrainConfig) -> Boosted:
    """AdamW with optim's schedule (linear warmup to optim.lr, then constant or decaying over max_steps), boosted with
    the configured plugin. On CUDA the optimizer is torch's fused AdamW (one kernel over every parameter; ZeRO-2
    hands it its fp32 master shards); on the CPU the default implementation, whose results the demo's figures are."""
    from colossalai.booster import Booster

    opt = cfg.optim
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay,
        fused=True if torch.cuda.is_available() else None,
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: opt.lr_factor(s, cfg.max_steps))
    plugin, resolved = make_plugin(cfg.plugin, opt.grad_clip)
    booster = Booster(plugin=plugin)
    model, optimizer, _, _, scheduler = booster.boost(model, optimizer, lr_scheduler=scheduler)
    return Boosted(booster, model, model.unwrap(), optimizer, scheduler, resolved)


def all_sum(value: float, device: str) -> float:
    """The sum of `value` over all processes."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return float(t)


def scale_lr(scheduler, base_lr: float) -> None:
    """Set the schedule's base learning rate (after a rollback) and the optimizer's current rate to match."""
    scheduler.base_lrs = [base_lr for _ in scheduler.base_lrs]
    for group, fn in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["lr"] = base_lr * fn(scheduler.last_epoch)


def clip_gradients(model, optimizer, max_norm: float, plugin: str) -> float:
    """The global norm of this step's gradients before clipping, the same on every rank; ddp clips them to
    `max_norm` (none when 0) here, zero2 inside its step."""
    if plugin == "zero2":
        return zero2_grad_norm(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
    return float(norm)


def zero2_grad_norm(optimizer) -> float:
    """The global L2 norm of the gradients LowLevelZero holds after backward (each rank its reduced shards): the
    norm its step clips by, computed before the step so that a non-finite one can skip it (in bf16 LowLevelZero
    has no overflow check of its own). NaN or inf when any gradient is."""
    squares = 0.0
    for group_id in range(optimizer.num_param_groups):
        for store in optimizer.pg_to_grad_store.values():
            grads = store.get_working_grads_by_group_id(group_id)
            squares += optimizer._compute_grad_norm(dp_pg=store.torch_pg, gradients=grads) ** 2
    return math.sqrt(squares)
