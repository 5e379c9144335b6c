"""Sequence parallelism for STDiT over the spatial/temporal split (Ulysses-style all-to-all).

A video of T frames x S tokens per frame is split over the `sp` ranks of a sequence-parallel group by frame:
each rank holds T/sp frames and all S tokens of each, so spatial attention, cross-attention and the MLP are local.
Temporal attention needs every frame of a position: one all-to-all regroups the tokens by position (each rank
then holds all T frames of S/sp positions), the attention runs locally, and a second all-to-all restores the
frame split. The output is gathered along frames at the end, so the model returns the whole prediction on every
rank of the group and the loss is unchanged.

Gradients: the gather's backward sums the output gradient over the group (every rank computes the same loss), so
the group's parameter gradients sum to `sp` times the loss gradient; data parallelism then averages over all
`dp * sp` ranks, which leaves exactly the gradient of the data-parallel loss. All collectives are plain
`torch.distributed` calls (all_to_all, all_gather, all_reduce): gloo on CPU, NCCL on GPU; where a backend has no
all_to_all (gloo before torch 2.13), it is done with all_gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class SequenceParallel:
    """A sequence-parallel group: this rank's position in it and its size."""

    group: object  # a torch.distributed ProcessGroup
    rank: int
    size: int

    def can_split(self, num_frames: int, tokens_per_frame: int) -> bool:
        """Whether a video of this shape can be split: frames and positions divisible by the group size. Other
        shapes (images among them) are computed whole on every rank of the group: correct, only not faster."""
        return self.size > 1 and num_frames % self.size == 0 and tokens_per_frame % self.size == 0


def new_groups(sp: int) -> tuple[SequenceParallel | None, int, int]:
    """Split the world into consecutive groups of `sp` ranks: (this rank's group or None when sp = 1,
    data-parallel rank, data-parallel size). Every rank must call this (group creation is collective)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    if sp < 1 or world % sp:
        raise ValueError(f"sp={sp} must divide the number of processes ({world}); e.g. sp=1 or sp={world}")
    if sp == 1:
        return None, rank, world
    mine = None
    for start in range(0, world, sp):
        group = dist.new_group(list(range(start, start + sp)))
        if start <= rank < start + sp:
            mine = SequenceParallel(group, rank - start, sp)
    return mine, rank // sp, world // sp


# Backends found without all_to_all (gloo before torch 2.13: "Backend gloo does not support alltoall")
NO_ALL_TO_ALL: set[str] = set()


def _exchange(chunks: list[torch.Tensor], sp: SequenceParallel) -> list[torch.Tensor]:
    """All-to-all: chunk j of every rank goes to rank j; returns the chunks received, in rank order. Where the
    backend has no all_to_all, every rank's chunks are gathered and this rank's kept: the same tensors for
    `sp` times the traffic (CPU runs)."""
    backend = str(dist.get_backend(sp.group))
    if backend not in NO_ALL_TO_ALL:
        received = [torch.empty_like(c) for c in chunks]
        try:
            dist.all_to_all(received, chunks, group=sp.group)
            return received
        except RuntimeError as err:  # raised on every rank alike, before anything is sent
            if "support alltoall" not in str(err):
                raise
            NO_ALL_TO_ALL.add(backend)
    mine = torch.stack(chunks)
    everyone = [torch.empty_like(mine) for _ in range(sp.size)]
    dist.all_gather(everyone, mine, group=sp.group)
    return [theirs[sp.rank] for theirs in everyone]


def _all_to_all(x: torch.Tensor, scatter_dim: int, gather_dim: int, sp: SequenceParallel) -> torch.Tensor:
    chunks = [c.contiguous() for c in x.chunk(sp.size, dim=scatter_dim)]
    return torch.cat(_exchange(chunks, sp), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scatter_dim: int, gather_dim: int, sp: SequenceParallel):
        ctx.dims, ctx.sp = (scatter_dim, gather_dim), sp
        return _all_to_all(x, scatter_dim, gather_dim, sp)

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, gather_dim, scatter_dim, ctx.sp), None, None, None


class _GatherFrames(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim: int, sp: SequenceParallel):
        ctx.dim, ctx.sp = dim, sp
        parts = [torch.empty_like(x) for _ in range(sp.size)]
        dist.all_gather(parts, x.contiguous(), group=sp.group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.sp.group)
        return grad.chunk(ctx.sp.size, dim=ctx.dim)[ctx.sp.rank].contiguous(), None, None


def frames_to_positions(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """(B, T/sp, S, C) split by frame -> (B, T, S/sp, C) split by position."""
    return _AllToAll.apply(x, 2, 1, sp)


def positions_to_frames(x: torch.Tensor, sp: SequenceParallel) -> torch.Tensor:
    """(B, T, S/sp, C) split by position -> (B, T/sp, S, C) split by frame."""
    return _AllToAll.apply(x, 1, 2, sp)


def local_frames(x: torch.Tensor, dim: int, sp: SequenceParallel) -> torch.Tensor:
    """This rank's share of frames along `dim`."""
    return x.chunk(sp.size, dim=dim)[sp.rank]


def gather_frames(x: torch.Tensor, dim: int, sp: SequenceParallel) -> torch.Tensor:
    """Every rank's frames along `dim`, in rank order (the inverse of `local_frames`)."""
    return _GatherFrames.apply(x, dim, sp)
