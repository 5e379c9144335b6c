"""The EMA under ZeRO-2: kept from the fp32 master shards, not from the bf16 working weights."""

import pytest
import torch
import torch.distributed as dist

from components.train.ema import EMA
from pipelines.processes import free_ports
from tests.model.helpers import randomize, tiny_stdit

WORLD = 1  # one rank: its shard is the whole (padded) parameter; a GPU run has 8


class ZeroLikeOptimizer:
    """What EMA reads of ColossalAI's LowLevelZeroOptimizer (which needs CUDA): for every bf16 working parameter,
    this rank's flat fp32 master shard (the parameter padded to a multiple of the group size), the padding and the
    process group."""

    def __init__(self, working: torch.nn.Module, group_size: int = 4):
        self.param_to_pg, self.padding, self.masters = {}, {}, {}
        for p in working.parameters():
            pad = (group_size - p.numel() % group_size) % group_size
            self.padding[id(p)] = pad
            self.masters[id(p)] = torch.nn.functional.pad(p.detach().float().reshape(-1), [0, pad])
            self.param_to_pg[p] = dist.group.WORLD

    def get_working_to_master_map(self):
        return self.masters

    def get_param_padding_size(self, p):
        return self.padding[id(p)]


@pytest.fixture
def group():
    (port,) = free_ports(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=WORLD)
    yield
    dist.destroy_process_group()


def test_the_ema_follows_the_fp32_master_weights_not_their_bf16_rounding(group):
    fp32 = randomize(tiny_stdit())
    working = tiny_stdit().to(torch.bfloat16)
    working.load_state_dict(fp32.state_dict())  # held in bf16, as ZeRO-2 holds the model
    optimizer = ZeroLikeOptimizer(working)
    ema_model = tiny_stdit()
    ema_model.load_state_dict(fp32.state_dict())
    ema = EMA(ema_model, working, optimizer, "zero2")
    # ZeRO-2 casts the model before it makes the master weights: they start from the bf16 values
    expected = {k: v.float().clone() for k, v in working.state_dict().items()}
    for step in range(3):  # optimizer steps smaller than bf16 can hold: only the master weights see them
        for name, p in working.named_parameters():
            master = optimizer.masters[id(p)]
            master[: p.numel()] += 1e-4 * (step + 1)
            p.data.copy_(master[: p.numel()].view(p.shape))
            expected[name] = 0.9 * expected[name] + 0.1 * master[: p.numel()].view(p.shape)
        ema.update(0.9)
    whole = ema.whole().state_dict()
    assert all(torch.allclose(whole[k], expected[k], atol=1e-6) for k in expected)
    rounded = tiny_stdit()  # what an EMA of the working weights gets: the updates lost in bf16 rounding
    rounded.load_state_dict({k: v.float() for k, v in working.state_dict().items()})
    for _ in range(3):
        for e, p in zip(rounded.parameters(), working.parameters(), strict=True):
            e.data.mul_(0.9).add_(p.detach().float(), alpha=0.1)
    assert any(not torch.allclose(rounded.state_dict()[k], expected[k], atol=1e-6) for k in expected)

    # a checkpoint's EMA model, loaded back, is sharded again exactly
    saved = {k: v.clone() for k, v in whole.items()}
    for _, _, _, shard in ema._shards:
        shard.zero_()
    ema.model.load_state_dict(saved)
    ema.loaded()
    assert all(torch.equal(ema.whole().state_dict()[k], saved[k]) for k in saved)


def test_with_ddp_the_ema_follows_the_models_own_fp32_weights():
    model, ema_model = randomize(tiny_stdit()), tiny_stdit()
    ema = EMA(ema_model, model, torch.optim.SGD(model.parameters(), lr=0.1), "ddp")
    ema.update(0.0)  # decay 0: the EMA is the weights
    assert all(torch.equal(a, b) for a, b in zip(ema.whole().parameters(), model.parameters(), strict=True))
