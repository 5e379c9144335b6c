"""Run under torchrun with 2 processes: STDiT with sequence parallelism (sp = world size) against the same model
computed whole, forward and backward, for every temporal-position variant; and the all-to-all done by all_gather
(backends without one) against gloo's own. Rank 0 writes the largest differences as JSON to the path given as the
only argument."""

import json
import sys

import torch
import torch.distributed as dist

from model.networks import parallel
from model.networks.parallel import new_groups
from tests.model.helpers import inputs, randomize, tiny_stdit


def compare(compiled: bool = False, **config) -> dict[str, float]:
    sp, _, _ = new_groups(dist.get_world_size())
    model = randomize(tiny_stdit(**config), std=0.1)
    if compiled:  # fused projections and compiled blocks, as the trainer runs them on a GPU
        model.fuse_projections().compile_blocks()
    x, t, text = inputs(batch=2, frames=4, height=8, width=8, seed=1)
    mask = torch.ones(2, text.shape[1], dtype=torch.bool)
    mask[1, -2:] = False  # a padded caption
    results, tokens = [], []
    model.transformer_blocks[0].register_forward_hook(lambda m, args, out: tokens.append(args[0].shape[1]))
    for group in (None, sp):
        model.sequence_parallel = group
        model.zero_grad()
        out = model(x, t, text, mask).sample
        out.pow(2).mean().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        if group is not None:  # the group's gradients sum to sp x the loss gradient (see model.networks.parallel)
            dist.all_reduce(grads)
            grads /= group.size
        results.append((out.detach(), grads))
    (out1, g1), (out2, g2) = results
    return {
        "forward": float((out1 - out2).abs().max()),
        "grad": float((g1 - g2).abs().max()),
        "grad_scale": float(g1.abs().max()),
        "tokens_per_rank": tokens,  # video tokens a block saw: whole, then split
        "compiled": model.compiled is not None,  # still compiled: no eager fall-back happened
    }


def exchanged_by_gather() -> dict[str, float]:
    """The all-to-all a backend without one gets (all_gather, this rank's chunks kept) against the backend's own,
    forward and backward, on a tensor that differs per rank."""
    sp, _, _ = new_groups(dist.get_world_size())
    torch.manual_seed(10 + dist.get_rank())
    x = torch.randn(2, 4, 6, 3, requires_grad=True)
    results = []
    for by_gather in (False, True):
        parallel.NO_ALL_TO_ALL.clear()
        if by_gather:
            parallel.NO_ALL_TO_ALL.add(str(dist.get_backend(sp.group)))
        x.grad = None
        y = parallel.frames_to_positions(x, sp)
        (y * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
        results.append((y.detach(), x.grad.clone()))
    parallel.NO_ALL_TO_ALL.clear()
    (y1, g1), (y2, g2) = results
    worst = torch.stack([(y1 - y2).abs().max(), (g1 - g2).abs().max()])
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # every rank's differences: rank 0 alone writes the report
    return {"forward": float(worst[0]), "grad": float(worst[1]), "shape": list(y2.shape)}


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    report = {tp: compare(temporal_position=tp, qk_norm=True) for tp in ("rope", "sincos", "rope+sincos")}
    report["rope, compiled"] = compare(compiled=True, temporal_position="rope", qk_norm=True)
    report["all-to-all by gather"] = exchanged_by_gather()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
