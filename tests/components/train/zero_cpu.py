"""ColossalAI's own ZeRO-2 (LowLevelZeroPlugin, LowLevelZeroOptimizer: bf16 working weights, fp32 master shards,
gradients reduced then sliced per rank) running on the CPU over gloo, for tests.

What stops it on a CPU is CUDA's stream API, nothing of ZeRO's logic: the optimizer asks the accelerator for
streams (`Stream`, `current_stream`, `stream`, `synchronize`), records the flattened gradients on a stream
(`Tensor.record_stream`, which has no CPU kernel) and asserts in `_sanity_checks` that the accelerator is CUDA or
NPU. `install()` gives it a CPU accelerator whose streams do nothing (a CPU runs everything in order), a CPU
`record_stream` that does nothing, and skips that one assertion. Everything else, sharding, padding, reduction,
master weights, clipping, the step, checkpoint saving and loading, is ColossalAI's code as a GPU runs it.
`tests/components/train/test_zero2.py` checks the surface this relies on against the installed ColossalAI.

    python -m tests.components.train.zero_cpu ARGS...   # `python -m components.train ARGS` with plugin zero2 on CPU
"""

from __future__ import annotations

import contextlib
import sys

import torch

STREAM_METHODS = ("Stream", "current_stream", "stream", "synchronize")  # what the shim's accelerator replaces
_installed: list = []


class _CpuStream(torch.Stream):
    """A stream on which everything is already done."""

    def wait_stream(self, stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


def install() -> None:
    """Make LowLevelZero run on the CPU in this process (idempotent)."""
    if _installed:
        return
    import colossalai.accelerator.api as accelerator_api
    from colossalai.accelerator.cpu_accelerator import CpuAccelerator
    from colossalai.zero.low_level.low_level_optim import LowLevelZeroOptimizer

    class CpuStreams(CpuAccelerator):
        def Stream(self, *args, **kwargs):
            return _CpuStream("cpu")

        def current_stream(self, *args, **kwargs):
            return _CpuStream("cpu")

        def stream(self, stream):
            return contextlib.nullcontext()

        def synchronize(self, *args, **kwargs) -> None:
            pass

    library = torch.library.Library("aten", "IMPL")
    library.impl("record_stream", lambda tensor, stream: None, "CPU")
    accelerator_api._ACCELERATOR = CpuStreams()
    LowLevelZeroOptimizer._sanity_checks = lambda self: None
    _installed.append(library)  # the registration lasts as long as the library object


def zero2_everywhere(monkeypatch=None) -> None:
    """`plugin=zero2` builds ColossalAI's LowLevelZero plugin on the CPU too (install() first)."""
    from components.train import launch

    install()
    original = launch.make_plugin

    def make_plugin(name: str, grad_clip: float):
        if launch.plugin_name(name) == "zero2":
            return launch.zero2_plugin(grad_clip), "zero2"
        return original(name, grad_clip)

    if monkeypatch is not None:
        monkeypatch.setattr(launch, "make_plugin", make_plugin)
    else:
        launch.make_plugin = make_plugin


def main() -> int:
    from components.common.cli import module_main
    from components.common.quiet import quiet_libraries
    from components.train.cli import add_parser

    quiet_libraries()
    zero2_everywhere()
    return module_main(add_parser, "train")


if __name__ == "__main__":
    sys.exit(main())
