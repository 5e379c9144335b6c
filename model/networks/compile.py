"""Regional compilation: every block of a model through `torch.compile`, in place, with an eager fall-back.

The blocks of a transformer share their code, so dynamo traces one graph per input shape and every block runs it
(their parameters are the graph's inputs, not constants). Compiling in place (`nn.Module.compile`) leaves the
parameter names and the state dict as they are. A compiler that cannot run here (no C++ toolchain for inductor on
the CPU, an operator it does not support) raises a dynamo error on the call: the blocks then run eager, with one
warning that says how to skip compiling; errors of the call itself pass through.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


class CompiledBlocks:
    """Runs the blocks of `blocks` compiled by `backend` (a name or a callable), eager after a compiler failure."""

    def __init__(self, blocks: nn.ModuleList, backend="inductor", **options):
        self.blocks = blocks
        self.backend = backend
        for block in blocks:
            block.compile(backend=backend, **options)

    def __call__(self, block: nn.Module, *args) -> torch.Tensor:
        from torch._dynamo.exc import TorchDynamoException

        try:
            return block(*args)
        except TorchDynamoException as err:  # the compiler's own failure (the call's errors pass through)
            self.to_eager(err)
            return block(*args)

    def to_eager(self, err: Exception) -> None:
        log.warning(
            "torch.compile failed (%s: %s); the model runs eager from here (model.compile=false skips compiling)",
            type(err).__name__,
            " ".join(str(err).split())[:300],
        )
        for block in self.blocks:
            block._compiled_call_impl = None  # nn.Module.compile's compiled entry point
        self.backend = None
